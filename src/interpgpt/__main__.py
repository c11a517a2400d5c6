from interpgpt.cli import main

main()
