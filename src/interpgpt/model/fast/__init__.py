"""Unhooked fast paths: the same computation as `model.taskgpt`, without hook points, for
generation (`decode`) and the analyses' inner loops; `block` holds the one unhooked
forward block, `onednn` the optional fused CPU linears. Tests hold each equal to the
hooked model."""
