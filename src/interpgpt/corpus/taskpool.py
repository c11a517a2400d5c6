"""The task pool: template data from which every corpus task and its steps are built.

A *family* is one kind of activity ("clean a room", "write a report"). It owns task
templates, the objects they apply to, an optional scope phrase, and ten *phases*: the
things you do, in the order you do them. Every phase has a priority rank 0-9; a plan of
`n` steps keeps the phases ranked below `n`, in sequence order, so a short plan keeps
the essentials and a long one adds the optional detail (warm-up, proofreading, labels).

Complexity follows from the words of the task: the family's base size, plus one for a
heavy template ("Deep clean", "Finalize"), a big object ("the garage", "a three-course
meal"), a scope phrase ("top to bottom", "for twenty guests") and a deadline ("before
Friday"), clipped to 1-5. The number of steps follows from complexity (`STEP_COUNTS`),
which is what makes Spearman(complexity, step count) high by construction.

Phase lines use a compact notation so the data stays readable::

    "<rank> <standard phrasing> | <synonym> > <adhd micro step> | <synonym> ; <micro step>"

The standard variant draws one phrasing per phase; the ADHD variant draws one phrasing
per micro step, so it has more, shorter steps covering the same content.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

HEAVY = "*"
"""Suffix marking a template or object that adds one to a task's complexity."""

STEP_COUNTS: dict[int, tuple[int, ...]] = {
    1: (3, 4),
    2: (4, 5),
    3: (5, 6, 7),
    4: (7, 8),
    5: (9, 10),
}
"""Standard-variant step counts a task of each complexity may be written with."""

DEADLINES = (" before Friday", " before the weekend", " by tonight", " by the end of the day")
"""Deadline phrases shared by most families; each adds one to complexity."""


@dataclass(frozen=True)
class Phase:
    """One thing to do within a task, with all the ways of writing it."""

    rank: int
    """Priority 0-9: a plan of n steps keeps the phases with rank < n."""
    standard: tuple[str, ...]
    """Alternative phrasings of the phase as one standard-variant step."""
    micro: tuple[tuple[str, ...], ...]
    """ADHD micro steps in order, each a tuple of alternative phrasings."""


@dataclass(frozen=True)
class Family:
    """One kind of activity: templates x objects x scopes x deadlines give its tasks."""

    name: str
    """Short identifier, stored with each task."""
    domain: str
    """Life domain (household, work, ...)."""
    base: int
    """Complexity of the lightest task in the family (1 or 2)."""
    templates: tuple[str, ...]
    """Task templates with an `{obj}` slot; a trailing `*` marks a heavy template."""
    objects: tuple[str, ...]
    """What the task applies to; a trailing `*` marks a big object."""
    scopes: tuple[str, ...]
    """Optional scope phrases appended to the task; each adds one to complexity."""
    phases: tuple[str, ...]
    """Ten phase lines in sequence order (notation in the module docstring)."""
    deadlines: tuple[str, ...] = DEADLINES
    """Deadline phrases that fit this family."""


@dataclass(frozen=True)
class TaskSpec:
    """One distinct task of the pool."""

    pool_index: int
    """Position in the full pool; used as the task id."""
    task: str
    """The task as written, e.g. "Deep clean the garage before Friday"."""
    domain: str
    """Life domain of the family."""
    family: str
    """Family name."""
    complexity: int
    """1-5, derived from the task's wording."""
    phases: tuple[Phase, ...]
    """The family's phases with `{obj}` filled in, in sequence order."""


def parse_phase(line: str, obj: str) -> Phase:
    """Parse one phase line (module docstring notation), filling `{obj}`."""
    head, _, micro_part = line.partition(">")
    rank_text, _, standard_part = head.strip().partition(" ")
    standard = tuple(s.strip().format(obj=obj) for s in standard_part.split("|"))
    micro = tuple(
        tuple(s.strip().format(obj=obj) for s in step.split("|")) for step in micro_part.split(";")
    )
    if not micro_part.strip() or any(not s for group in (standard, *micro) for s in group):
        raise ValueError(f"malformed phase line: {line!r}")
    return Phase(rank=int(rank_text), standard=standard, micro=micro)


def _weight(text: str) -> tuple[str, int]:
    return (text[:-1], 1) if text.endswith(HEAVY) else (text, 0)


def _family_tasks(family: Family) -> list[tuple[str, int, str]]:
    """(task text, complexity, object) for every combination in a family."""
    out = []
    for template_raw in family.templates:
        template, t_weight = _weight(template_raw)
        for obj_raw in family.objects:
            obj, o_weight = _weight(obj_raw)
            for scope in ("", *family.scopes):
                for deadline in ("", *family.deadlines):
                    text = template.format(obj=obj) + scope + deadline
                    score = family.base + t_weight + o_weight + bool(scope) + bool(deadline)
                    out.append((text[0].upper() + text[1:], min(score, 5), obj))
    return out


@cache
def task_pool() -> tuple[TaskSpec, ...]:
    """Every distinct task, in a fixed order that does not depend on any seed."""
    pool: list[TaskSpec] = []
    seen: set[str] = set()
    for family in FAMILIES:
        phase_cache: dict[str, tuple[Phase, ...]] = {}
        for text, complexity, obj in _family_tasks(family):
            if text in seen:
                continue
            seen.add(text)
            if obj not in phase_cache:
                phase_cache[obj] = tuple(parse_phase(line, obj) for line in family.phases)
            pool.append(
                TaskSpec(len(pool), text, family.domain, family.name, complexity, phase_cache[obj])
            )
    return tuple(pool)


def plan(phases: tuple[Phase, ...], n_steps: int) -> tuple[Phase, ...]:
    """The phases a plan of `n_steps` standard steps keeps, in sequence order."""
    return tuple(p for p in phases if p.rank < n_steps)


def check_families() -> None:
    """Raise ValueError if the template data breaks the invariants the corpus relies on."""
    max_steps = max(max(v) for v in STEP_COUNTS.values())
    for family in FAMILIES:
        ranks = sorted(parse_phase(line, "x").rank for line in family.phases)
        if ranks != list(range(max_steps)):
            raise ValueError(f"family {family.name}: phase ranks must be 0..{max_steps - 1}")


# fmt: off
FAMILIES: tuple[Family, ...] = (
    Family(
        "clean_room", "household", 1,
        ("Clean {obj}", "Tidy up {obj}", "Deep clean {obj}*", "Thoroughly clean {obj}*"),
        ("the kitchen", "the bathroom", "the living room", "the bedroom", "the home office",
         "the hallway", "the garage*", "the basement*"),
        (" top to bottom",),
        (
            "5 Put on some music | Start an upbeat playlist > Pick a playlist ; Press play",
            "1 Gather the cleaning supplies | Collect your cleaning supplies"
            " > Grab the spray bottle | Grab the spray ; Grab a cloth | Grab a rag",
            "3 Pick up the clutter in {obj} | Clear the clutter from {obj}"
            " > Pick up one item | Grab the first item ; Put items away",
            "6 Dust the shelves and ledges | Dust the high surfaces"
            " > Dust the top shelf ; Dust the lower ledges",
            "0 Wipe down every surface | Wipe down the surfaces > Spray one surface ; Wipe it dry",
            "7 Clean the windows and mirrors | Wash the windows and mirrors"
            " > Spray the glass ; Wipe the glass clean",
            "4 Vacuum the floor | Vacuum the floor and rugs"
            " > Plug in the vacuum ; Vacuum one corner ; Vacuum the rest",
            "2 Mop the floor | Mop the hard floors > Fill the mop bucket ; Mop toward the door",
            "8 Take out the trash | Empty the trash bins > Tie the trash bag ; Carry it outside",
            "9 Put the supplies away | Store the cleaning supplies > Put the supplies back",
        ),
    ),
    Family(
        "laundry", "household", 1,
        ("Wash the {obj}", "Launder the {obj}", "Wash and fold the {obj}*",
         "Wash and iron the {obj}*"),
        ("towels", "bed sheets", "work clothes", "gym clothes", "kids' clothes", "dark clothes",
         "winter coats*", "curtains*"),
        (" and put everything away",),
        (
            "3 Gather the {obj} | Collect the {obj} > Grab the hamper ; Collect the {obj}",
            "5 Sort lights from darks | Sort everything by color"
            " > Make a lights pile ; Make a darks pile",
            "7 Check the pockets | Empty all the pockets > Check each pocket",
            "8 Treat any stains | Pretreat the stains > Find the stains ; Dab on stain remover",
            "0 Load the washing machine | Load the washer > Open the washer ; Load the {obj}",
            "6 Add the detergent | Measure the detergent > Measure the detergent ; Pour it in",
            "1 Start the wash cycle | Run the washer > Pick a cycle ; Press start",
            "4 Move everything to the dryer | Transfer the load to the dryer"
            " > Open the washer ; Move the load to the dryer",
            "2 Fold the clean {obj} | Fold everything neatly > Fold one item ; Fold the rest",
            "9 Put the {obj} away | Put everything away > Carry the basket ; Put the {obj} away",
        ),
    ),
    Family(
        "organize", "household", 1,
        ("Organize {obj}", "Declutter {obj}", "Sort out {obj}", "Completely reorganize {obj}*"),
        ("the closet", "the pantry", "the bookshelf", "the desk drawers", "the kitchen cabinets",
         "the bathroom cabinet", "the attic*", "the storage room*"),
        (" and donate what you don't need",),
        (
            "3 Take a before photo | Snap a quick before photo > Grab your phone ; Take a photo",
            "0 Empty out {obj} | Take everything out of {obj}"
            " > Empty one shelf ; Empty the next shelf",
            "6 Wipe the empty shelves | Clean the empty shelves > Wipe one shelf ; Wipe the others",
            "1 Sort items into keep and donate piles | Sort everything into keep and donate"
            " > Make a keep pile ; Make a donate pile",
            "7 Toss anything broken | Throw out broken items > Spot broken items ; Toss them",
            "4 Group similar items together | Group the keepers by type"
            " > Pick one category ; Group those items",
            "8 Label the bins | Add labels to the containers > Write one label ; Stick it on",
            "2 Put the keepers back neatly | Return the keepers to {obj}"
            " > Put back one group ; Put back the rest",
            "5 Bag up the donations | Pack the donations into bags > Open a bag ; Fill the bag",
            "9 Drop off the donations | Take the donations to the car"
            " > Carry the bag ; Load it in the car",
        ),
    ),
    Family(
        "cook_meal", "cooking", 1,
        ("Cook {obj}", "Make {obj}", "Prepare {obj} from scratch*", "Cook {obj} for the family*"),
        ("dinner", "breakfast", "lunch", "a pasta dinner", "a stir fry", "a pot of soup",
         "a roast chicken dinner*", "a three-course meal*"),
        (" for six people", " with a side salad"),
        (
            "1 Pick a recipe | Choose a recipe > Open a recipe app | Open the recipe book"
            " ; Pick one recipe",
            "4 Check the ingredients | Check what ingredients you have"
            " > Open the fridge ; Check the pantry",
            "8 Clear the counter | Make space on the counter > Clear the counter",
            "0 Prep the ingredients | Wash and chop the ingredients"
            " > Wash the vegetables ; Chop the vegetables ; Measure the spices",
            "5 Preheat the oven | Heat up the pan > Turn on the stove ; Set the heat",
            "2 Cook the main dish | Start cooking > Add oil to the pan ; Cook the main dish",
            "6 Taste and adjust the seasoning | Season to taste > Taste it ; Add salt",
            "7 Set the table | Lay out plates and cutlery > Grab the plates ; Lay out forks",
            "3 Serve the food | Plate up the food > Plate the food ; Bring it to the table",
            "9 Wash the dishes | Clean up the kitchen > Rinse the pans ; Load the dishwasher",
        ),
    ),
    Family(
        "shopping", "errands", 1,
        ("Buy {obj}", "Shop for {obj}", "Pick up {obj}", "Do a big shop for {obj}*"),
        ("groceries", "groceries for the week*", "snacks for the party", "ingredients for dinner",
         "school lunch supplies", "cleaning supplies", "toiletries",
         "supplies for a birthday party*"),
        (" at two different stores",),
        (
            "2 Check what you already have | Look through the fridge and cupboards"
            " > Open the fridge ; Check the cupboards",
            "0 Write a shopping list | Make a list of what you need"
            " > Open a notes app | Grab a notepad ; Write each item",
            "6 Sort the list by aisle | Group the list by store section"
            " > Group the produce ; Group the rest",
            "7 Grab reusable bags | Pack some shopping bags > Find the bags ; Put them by the door",
            "3 Drive to the store | Head to the store"
            " > Grab your keys ; Drive to the store | Walk to the store",
            "1 Pick up everything on the list | Find each item on the list"
            " > Get the first item ; Cross it off ; Get the next item",
            "8 Compare prices on big items | Check the prices > Check the price tags",
            "4 Check out and pay | Pay at the register > Unload the cart ; Pay",
            "5 Unpack at home | Put everything away at home"
            " > Unpack the bags ; Put cold items away",
            "9 Throw out the old list | Recycle the shopping list > Toss the list",
        ),
    ),
    Family(
        "mail_package", "errands", 1,
        ("Mail {obj}", "Ship {obj}", "Post {obj}", "Send {obj} overseas*"),
        ("a package", "a birthday gift", "a return package", "a signed contract",
         "a box of books", "a care package", "holiday cards*", "a fragile parcel*"),
        (" with tracking and insurance",),
        (
            "0 Gather the items to send | Collect everything you are sending"
            " > Find the items ; Lay them out",
            "5 Find a sturdy box | Pick the right box > Find a box ; Check the size",
            "7 Wrap fragile things in padding | Add bubble wrap > Wrap one item ; Wrap the rest",
            "1 Pack the box | Pack everything securely > Put the items in ; Fill gaps with paper",
            "4 Tape it shut | Seal the box with tape > Close the flaps ; Tape the seams",
            "2 Write the address label | Address the package"
            " > Write the address ; Stick on the label",
            "8 Weigh the package | Check the weight > Weigh the box",
            "3 Drop it off at the post office | Take it to the post office"
            " > Grab the package ; Drive to the post office | Walk to the post office",
            "6 Pay for postage | Buy the postage > Pick a shipping option ; Pay",
            "9 Save the tracking number | Keep the receipt"
            " > Photograph the receipt ; Save the tracking number",
        ),
    ),
    Family(
        "report", "work", 2,
        ("Write {obj}", "Prepare {obj}", "Draft {obj}", "Finalize {obj}*"),
        ("the quarterly budget report", "a project status report", "the monthly sales report",
         "a meeting summary", "the weekly update", "an incident report",
         "the annual review report*", "a market research report*"),
        (" with charts and a summary",),
        (
            "5 Review the goals of the report | Check what the report needs"
            " > Open the brief ; Note the key questions",
            "0 Gather the data | Collect the numbers you need"
            " > Open the spreadsheet ; Export the numbers",
            "6 Check the data for errors | Double-check the figures"
            " > Scan for odd numbers ; Fix the errors",
            "3 Outline the sections | Write a quick outline > List the sections ; Order them",
            "1 Draft the main findings | Write the body of the report"
            " > Write one section ; Write the next section",
            "7 Make the charts | Build the charts > Pick one chart ; Build the chart",
            "8 Write the summary | Draft an executive summary"
            " > Write three key points ; Turn them into a paragraph",
            "4 Proofread the draft | Read it through for mistakes"
            " > Read the first page ; Read the rest",
            "9 Ask a colleague for feedback | Get a second opinion"
            " > Send the draft ; Note the feedback",
            "2 Send the final version | Share the report > Attach the file ; Click send",
        ),
    ),
    Family(
        "presentation", "work", 2,
        ("Prepare {obj}", "Build {obj}", "Put together {obj}", "Polish {obj}*"),
        ("a presentation for the team meeting", "slides for the client pitch*",
         "a training presentation", "the project kickoff deck", "a demo for the product review",
         "a lunch-and-learn talk", "the board presentation*", "a conference talk*"),
        (" with speaker notes",),
        (
            "4 Define the main message | Decide on the key message"
            " > Write the main point ; Cut it to one line",
            "0 Outline the slides | Sketch the slide order"
            " > List the slide titles ; Put them in order",
            "6 Collect the supporting data | Gather facts and figures"
            " > Find the numbers ; Copy them over",
            "1 Build the slides | Create the slides"
            " > Make the title slide ; Fill in one slide ; Fill in the rest",
            "7 Add visuals | Add charts and images > Pick one image ; Add a chart",
            "5 Write speaker notes | Draft talking points"
            " > Write notes for one slide ; Write the rest",
            "2 Rehearse the talk | Practice the presentation"
            " > Practice the opening ; Run through it once",
            "8 Time the run-through | Check the timing > Start a timer ; Note the time",
            "3 Fix the weak slides | Revise the slides > Fix one slide ; Fix the rest",
            "9 Share the deck | Send the slides to the organizer > Export the file ; Send it",
        ),
    ),
    Family(
        "inbox", "work", 1,
        ("Clear {obj}", "Catch up on {obj}", "Sort through {obj}", "Get {obj} down to zero*"),
        ("the work inbox", "the email backlog*", "the client emails", "the team messages",
         "the unread emails", "the shared inbox", "the support tickets", "last week's emails*"),
        (" and reply to everything urgent",),
        (
            "7 Close the other tabs | Shut down distractions"
            " > Close the other tabs ; Silence your phone",
            "0 Open {obj} | Pull up {obj} > Open the app | Open the inbox",
            "4 Sort by date | Sort the messages by date > Click sort ; Pick oldest first",
            "1 Archive anything you don't need | Delete the junk > Select the junk ; Archive it",
            "5 Flag the urgent messages | Mark what needs a reply > Star the urgent ones",
            "2 Reply to the urgent ones | Answer the flagged messages"
            " > Open one message ; Type a reply ; Hit send",
            "6 Forward what others should handle | Delegate the rest"
            " > Pick one message ; Forward it",
            "8 Add follow-ups to your to-do list | Note the follow-ups on your list"
            " > Open the to-do list ; Add each task",
            "3 Check that nothing is left | Confirm the list is clear"
            " > Scroll to the bottom ; Check it is empty",
            "9 Close the email app | Log out of email > Close the app",
        ),
    ),
    Family(
        "exam", "study", 2,
        ("Study for {obj}", "Prepare for {obj}", "Revise for {obj}", "Cram for {obj}*"),
        ("the math exam", "a biology quiz", "the history midterm", "the chemistry final*",
         "a French vocabulary test", "the driving theory test", "the statistics final*",
         "a physics quiz"),
        (" and review every chapter",),
        (
            "2 Check what the exam covers | Look up the exam topics"
            " > Open the syllabus ; List the topics",
            "6 Make a study schedule | Plan your study sessions"
            " > Pick study times ; Add them to your calendar",
            "8 Clear your desk | Set up a quiet study spot > Clear the desk ; Silence your phone",
            "0 Review your notes | Read through your notes"
            " > Open your notes ; Read the first topic ; Read the next topic",
            "4 Make flashcards | Write flashcards for key terms"
            " > Write five cards ; Write five more",
            "1 Do practice problems | Work through practice questions"
            " > Do two problems ; Check the answers",
            "5 Quiz yourself with the flashcards | Test yourself"
            " > Shuffle the cards ; Go through the stack",
            "3 Go over your mistakes | Review what you got wrong"
            " > Mark the mistakes ; Redo one problem",
            "7 Take a timed practice test | Do a mock exam > Set a timer ; Do the practice test",
            "9 Get a good night's sleep | Go to bed early > Pack your bag ; Go to bed early",
        ),
    ),
    Family(
        "essay", "study", 2,
        ("Write {obj}", "Draft {obj}", "Finish {obj}", "Rewrite {obj}*"),
        ("an English essay", "a history paper", "a lab report", "a book review",
         "a research paper*", "a college application essay", "a philosophy essay",
         "a thesis chapter*"),
        (" with proper citations",),
        (
            "2 Read the assignment prompt | Check the assignment brief"
            " > Open the prompt ; Highlight the key words",
            "5 Research the topic | Find good sources > Search the library ; Save two sources",
            "7 Take notes on the sources | Note the key points"
            " > Read one source ; Jot down quotes",
            "3 Write a thesis statement | Decide on your main argument"
            " > Write one sentence ; Tweak it",
            "0 Outline the essay | Plan the paragraphs > List the main points ; Order them",
            "1 Write the first draft | Draft the body paragraphs"
            " > Write the intro ; Write one paragraph ; Write the conclusion",
            "8 Add the citations | Format the references > Add one citation ; Add the rest",
            "4 Revise the draft | Edit for clarity > Reread the intro ; Fix weak sentences",
            "6 Proofread for typos | Check spelling and grammar > Run spell check ; Read it aloud",
            "9 Submit the essay | Hand it in > Upload the file ; Click submit",
        ),
    ),
    Family(
        "appointment", "health", 1,
        ("Book {obj}", "Schedule {obj}", "Get ready for {obj}",
         "Sort out {obj} and the insurance forms*"),
        ("a dentist appointment", "a doctor's checkup", "an eye exam", "a physio session",
         "a flu shot", "a blood test", "a specialist referral*", "a full health checkup*"),
        (" and refill the prescriptions",),
        (
            "4 Find your insurance card | Look up your insurance details"
            " > Open your wallet ; Find the card",
            "6 Check your calendar | Pick a few free time slots"
            " > Open the calendar ; Note two free slots",
            "0 Call the clinic | Phone the office > Find the number ; Make the call",
            "1 Book a time | Schedule the appointment > Pick a slot ; Confirm the time",
            "5 Add it to your calendar | Put the appointment in your calendar"
            " > Open the calendar ; Add the appointment",
            "7 Write down your questions | List what you want to ask"
            " > Write one question ; Add the rest",
            "8 Fill out the intake forms | Complete the paperwork"
            " > Open the form ; Fill in each section",
            "9 Set a reminder | Set an alarm for the day before"
            " > Open the clock app ; Set the reminder",
            "2 Show up on time | Arrive at the appointment"
            " > Leave the house ; Check in at reception",
            "3 Follow up on next steps | Note any follow-up instructions"
            " > Write down the advice ; Book the next visit",
        ),
    ),
    Family(
        "workout", "health", 1,
        ("Do {obj}", "Fit in {obj}", "Squeeze in {obj}", "Push through {obj}*"),
        ("a quick workout", "a home workout", "a morning run", "a yoga session",
         "a gym session", "a bike ride", "a long run*", "a full-body strength workout*"),
        (" and track the progress",),
        (
            "3 Pick a workout plan | Choose today's routine"
            " > Open the workout app ; Pick a routine",
            "1 Change into workout clothes | Put on your gym clothes"
            " > Find your clothes ; Get changed",
            "6 Fill a water bottle | Pack a water bottle > Fill the bottle",
            "8 Put on a playlist | Start some music > Pick a playlist ; Press play",
            "0 Warm up | Do a short warm-up > March in place ; Swing your arms",
            "2 Do the main session | Start the main workout"
            " > Do the first set ; Do the next set ; Finish the last set",
            "5 Cool down | Walk it off slowly > Slow down ; Walk for a minute",
            "4 Stretch your muscles | Do some stretches > Stretch your legs ; Stretch your arms",
            "7 Log the workout | Record the session > Open the app ; Log the workout",
            "9 Take a shower | Shower and change > Start the shower ; Get dressed",
        ),
    ),
    Family(
        "bills", "finance", 1,
        ("Pay {obj}", "Sort out {obj}", "Settle {obj}", "Catch up on {obj}*"),
        ("the bills", "the electricity bill", "the phone bill", "the credit card bill",
         "the internet bill", "the water bill", "the overdue bills*", "the medical bills*"),
        (" and set up autopay",),
        (
            "0 Gather {obj} | Collect {obj} > Find the statements ; Stack them up",
            "5 Check the due dates | Note when each is due > Read the due date ; Write it down",
            "7 Check for errors | Look for wrong charges > Scan each line ; Circle odd charges",
            "3 Check your balance | Look at your bank balance"
            " > Open the banking app ; Check the balance",
            "1 Log in to the bank | Open online banking > Open the app ; Enter your password",
            "2 Make the payments | Pay each bill > Enter the amount ; Confirm the payment",
            "6 Save the confirmations | Keep the receipts > Screenshot the receipt ; Save it",
            "8 Update your budget | Record the payments"
            " > Open the budget sheet ; Enter the amounts",
            "4 File the statements | Put the paperwork away > Put statements in the folder",
            "9 Set a reminder for next month | Add next month's due date to the calendar"
            " > Open the calendar ; Add the reminder",
        ),
    ),
    Family(
        "budget", "finance", 2,
        ("Make {obj}", "Set up {obj}", "Review {obj}", "Rebuild {obj} from scratch*"),
        ("a monthly budget", "a household budget", "a grocery budget", "a holiday budget",
         "a savings plan", "a debt payoff plan*", "a yearly budget*", "a wedding budget*"),
        (" with the whole family",),
        (
            "0 Gather your bank statements | Pull up last month's statements"
            " > Open the banking app ; Download the statements",
            "4 Add up your income | Total your monthly income > List each paycheck ; Add them up",
            "1 List your expenses | Write down all your spending"
            " > List the fixed costs ; List the rest",
            "5 Group the expenses by category | Sort spending into categories"
            " > Make the categories ; Sort each expense",
            "6 Spot where money leaks | Find spending to cut"
            " > Highlight big items ; Pick one to cut",
            "2 Set a limit for each category | Set the spending limits"
            " > Set one limit ; Set the rest",
            "7 Pick a savings goal | Decide how much to save > Pick a number ; Write it down",
            "3 Put it in a spreadsheet | Enter the budget in a spreadsheet"
            " > Open a spreadsheet ; Type in the numbers",
            "8 Set up a savings transfer | Automate the savings"
            " > Open the bank app ; Schedule the transfer",
            "9 Schedule a monthly check-in | Plan to review it each month"
            " > Open the calendar ; Add a monthly reminder",
        ),
    ),
    Family(
        "party", "social", 2,
        ("Plan {obj}", "Organize {obj}", "Host {obj}", "Throw {obj}*"),
        ("a birthday party", "a dinner party", "a game night", "a baby shower*",
         "a picnic with friends", "a surprise party*", "a holiday get-together", "a movie night"),
        (" for twenty guests",),
        (
            "0 Pick a date and time | Choose the date > Check the calendar ; Pick a date",
            "1 Make a guest list | Decide who to invite > List close friends ; Add the rest",
            "2 Send the invitations | Invite everyone > Write the invite ; Send it out",
            "6 Plan the menu | Decide on food and drinks > Pick the snacks ; Pick the drinks",
            "5 Buy the supplies | Shop for food and decorations"
            " > Write the list ; Buy the supplies",
            "7 Decorate the space | Set up the decorations"
            " > Hang one decoration ; Hang the rest",
            "8 Make a playlist | Pick the music > Open the music app ; Add ten songs",
            "3 Prepare the food | Get the food ready > Prep the snacks ; Lay out the food",
            "4 Welcome the guests | Greet everyone at the door > Open the door ; Say hello",
            "9 Clean up afterwards | Tidy up after the party"
            " > Collect the cups ; Wipe the tables",
        ),
    ),
    Family(
        "card", "social", 1,
        ("Write {obj}", "Send {obj}", "Finish {obj}", "Handwrite {obj}*"),
        ("a thank-you note", "a birthday card", "a letter to grandma", "a sympathy card",
         "a postcard to a friend", "a get-well card", "wedding thank-you cards*",
         "holiday cards for the family*"),
        (" with a small gift",),
        (
            "0 Find a card and a pen | Grab a card and a pen > Find a card ; Find a pen",
            "4 Look up the address | Find the mailing address"
            " > Open your contacts ; Copy the address",
            "6 Think about what to say | Jot down a few ideas > Think of one memory ; Note it down",
            "7 Draft the message on scrap paper | Write a rough draft"
            " > Write a rough line ; Fix the wording",
            "1 Write the message | Write the note neatly"
            " > Write the greeting ; Write the message ; Sign your name",
            "8 Add a photo | Tuck in a small photo > Pick a photo ; Tuck it in",
            "2 Address the envelope | Write the address on the envelope"
            " > Write the name ; Write the address",
            "5 Add a stamp | Stick on a stamp > Find a stamp ; Stick it on",
            "3 Mail it | Drop it in the mailbox > Walk to the mailbox ; Drop it in",
            "9 Note the date you sent it | Log it in your calendar"
            " > Open the calendar ; Note the date",
        ),
    ),
    Family(
        "unwind", "self-care", 1,
        ("Take {obj}", "Enjoy {obj}", "Set up {obj}", "Make time for {obj}"),
        ("a relaxing bath", "a quiet evening", "a self-care evening", "a screen-free evening",
         "a reading night", "a lazy Sunday", "a spa night at home*", "a full rest day*"),
        (" without checking work email",),
        (
            "5 Silence your phone | Turn off notifications"
            " > Open settings ; Turn on do not disturb",
            "4 Tidy the space a little | Clear the room > Pick up the clothes ; Clear the table",
            "1 Dim the lights | Set a calm mood > Dim the lights ; Light a candle",
            "7 Make a warm drink | Brew some tea > Boil the kettle ; Brew the tea",
            "0 Get comfortable | Change into comfy clothes > Find comfy clothes ; Change",
            "2 Enjoy the quiet time | Relax without screens > Settle in ; Relax for a while",
            "6 Write in a journal | Journal for a few minutes"
            " > Open the journal ; Write three lines",
            "8 Do a face mask | Put on a face mask > Apply the mask ; Rinse it off",
            "3 Get ready for bed | Head to bed early > Brush your teeth ; Get into bed",
            "9 Set tomorrow's alarm | Set an alarm > Open the clock app ; Set the alarm",
        ),
        (" after work", " this weekend"),
    ),
    Family(
        "get_ready", "self-care", 1,
        ("Get ready for {obj}", "Get dressed for {obj}", "Prepare for {obj}",
         "Look your best for {obj}*"),
        ("work", "school", "a night out", "a first date", "a big meeting", "a family photo",
         "a job interview*", "a wedding*"),
        (" with time to spare",),
        (
            "6 Get up with the first alarm | Get out of bed > Turn off the alarm ; Sit up",
            "7 Open the curtains | Let some light in > Open the curtains",
            "0 Take a shower | Have a quick shower > Start the shower ; Wash your hair",
            "5 Brush your teeth | Brush and floss > Brush your teeth ; Floss",
            "3 Do your hair | Style your hair > Dry your hair ; Style it",
            "1 Get dressed | Put on your outfit > Pick an outfit ; Get dressed",
            "4 Eat breakfast | Have a quick breakfast > Make toast ; Eat it",
            "8 Pack your bag | Pack what you need > Grab your wallet ; Grab your keys",
            "9 Double-check the plan | Check the address and time"
            " > Open the calendar ; Check the address",
            "2 Head out the door | Leave on time > Check the time ; Lock the door",
        ),
        (" on time", " in twenty minutes"),
    ),
    Family(
        "device_setup", "tech", 2,
        ("Set up {obj}", "Install {obj}", "Get {obj} working", "Fully configure {obj}*"),
        ("the new phone", "the new laptop", "the home printer", "the wifi router",
         "a smart speaker", "the new tablet", "a home office computer*",
         "the family's new laptops*"),
        (" and move the old data over",),
        (
            "0 Unbox {obj} | Take {obj} out of the box > Open the box ; Remove the packaging",
            "5 Read the quick start guide | Check the setup instructions"
            " > Find the guide ; Read the first page",
            "1 Plug it in and power on | Charge it and turn it on"
            " > Plug it in ; Press the power button",
            "2 Connect to the wifi | Join the home network"
            " > Open the wifi settings ; Enter the password",
            "6 Sign in to your account | Log in with your account"
            " > Enter your email ; Enter your password",
            "3 Install the updates | Run the software updates > Open settings ; Start the update",
            "7 Install your main apps | Add the apps you need"
            " > Open the app store ; Install one app ; Install the rest",
            "8 Transfer your files | Move over your data"
            " > Connect the old device ; Start the transfer",
            "4 Test that everything works | Run a quick test > Try one feature ; Try another",
            "9 Recycle the packaging | Put the box away > Flatten the box ; Recycle it",
        ),
    ),
    Family(
        "backup", "tech", 2,
        ("Back up {obj}", "Make a backup of {obj}", "Save a copy of {obj}",
         "Fully back up {obj}*"),
        ("the laptop", "the phone photos", "the work files", "the family photos",
         "the school projects", "the music library", "the whole computer*",
         "ten years of photos*"),
        (" to two separate drives",),
        (
            "5 Check how much space you need | Check the size of the files"
            " > Open the folder ; Check the size",
            "0 Plug in the external drive | Connect the backup drive > Find the drive ; Plug it in",
            "6 Delete the junk first | Remove duplicate files > Find duplicates ; Delete them",
            "3 Make a backup folder | Create a dated folder"
            " > Make a new folder ; Name it with the date",
            "1 Copy the files over | Start the copy > Select the files ; Drag them over",
            "7 Upload a copy to the cloud | Sync a second copy online"
            " > Open the cloud app ; Start the upload",
            "2 Check the backup worked | Verify the copied files"
            " > Open the backup ; Open a few files",
            "8 Label the drive | Write the date on the drive > Grab a marker ; Label the drive",
            "4 Eject the drive safely | Safely remove the drive > Click eject ; Unplug the drive",
            "9 Set a monthly backup reminder | Schedule the next backup"
            " > Open the calendar ; Add the reminder",
        ),
    ),
    Family(
        "yard", "outdoors", 1,
        ("Tidy {obj}", "Clean up {obj}", "Weed {obj}", "Overhaul {obj}*"),
        ("the front yard", "the back garden", "the vegetable patch", "the flower beds",
         "the patio", "the balcony garden", "the whole yard*", "the overgrown garden*"),
        (" and fill the compost bin",),
        (
            "6 Check the weather | Look at the forecast > Check the weather app",
            "3 Put on gloves and old shoes | Get dressed for yard work"
            " > Put on old shoes ; Put on gloves",
            "0 Get the garden tools | Grab the tools from the shed"
            " > Open the shed ; Grab the tools",
            "1 Pull the weeds | Weed the beds > Weed one corner ; Weed the next patch",
            "7 Trim the hedges | Cut back the bushes > Trim one bush ; Trim the rest",
            "4 Mow the grass | Cut the lawn > Start the mower ; Mow one strip ; Mow the rest",
            "5 Rake the leaves | Rake up the clippings > Rake one area ; Rake the rest",
            "8 Water the plants | Give everything a good watering"
            " > Fill the watering can ; Water the plants",
            "2 Bag the yard waste | Collect the green waste > Fill a bag ; Tie it shut",
            "9 Put the tools away | Clean and store the tools > Rinse the tools ; Hang them up",
        ),
    ),
    Family(
        "hike", "outdoors", 1,
        ("Go on {obj}", "Plan {obj}", "Take {obj}", "Lead {obj} for the group*"),
        ("a day hike", "a walk in the park", "a nature walk", "a hike up the hill",
         "a beach walk", "a bike trail ride", "a camping trip*", "an all-day hike*"),
        (" with the kids",),
        (
            "1 Pick a route | Choose the trail > Open the map ; Pick a trail",
            "5 Check the weather | Look at the forecast > Check the forecast",
            "6 Pack snacks and water | Pack food and drinks > Fill the bottle ; Pack a snack",
            "7 Charge your phone | Make sure your phone is charged > Plug in the phone",
            "8 Tell someone your plan | Share your route with a friend"
            " > Text a friend ; Send the route",
            "0 Put on good shoes | Get dressed for the outdoors > Put on socks ; Lace up the shoes",
            "3 Head to the start | Travel to the trailhead > Grab your bag ; Head out",
            "2 Walk the route | Do the walk > Walk the first part ; Walk the rest",
            "4 Head back home | Return home > Walk back ; Unpack the bag",
            "9 Clean your shoes | Brush off your boots > Knock off the mud ; Set them to dry",
        ),
        (" this weekend", " before the rain", " before sunset"),
    ),
    Family(
        "pet_home", "pets", 1,
        ("Clean {obj}", "Wash out {obj}", "Refresh {obj}", "Deep clean {obj}*"),
        ("the litter box", "the dog bed", "the hamster cage", "the rabbit hutch",
         "the bird cage", "the guinea pig cage", "the chicken coop*", "the big dog kennel*"),
        (" and restock the pet food",),
        (
            "4 Move the pet somewhere safe | Put the pet in a safe spot"
            " > Grab the carrier ; Move the pet",
            "3 Gather the cleaning supplies | Grab the pet-safe cleaner"
            " > Find the cleaner ; Grab a bag",
            "0 Remove the old bedding | Empty out {obj} > Scoop out the mess ; Bag it up",
            "8 Take out the toys and bowls | Remove the accessories"
            " > Take out the bowls ; Take out the toys",
            "1 Scrub {obj} | Wash out {obj} > Scrub one side ; Scrub the rest",
            "6 Rinse everything | Rinse off the cleaner > Rinse it ; Check for soap",
            "7 Let it dry | Dry everything off > Wipe it down ; Let it air dry",
            "2 Add fresh bedding | Put in fresh bedding > Open the new bedding ; Spread it out",
            "5 Put the pet back | Return the pet home > Open the carrier ; Let the pet in",
            "9 Throw out the waste | Take the waste outside > Tie the bag ; Bin it",
        ),
    ),
    Family(
        "pack_trip", "travel", 2,
        ("Pack for {obj}", "Get ready for {obj}", "Prepare for {obj}",
         "Plan and pack for {obj}*"),
        ("a weekend trip", "a business trip", "a beach holiday", "a camping weekend",
         "a family visit", "a wedding out of town", "a ski trip*", "a two-week trip abroad*"),
        (" with carry-on luggage only",),
        (
            "3 Check the weather at the destination | Look up the forecast"
            " > Open the weather app ; Check the destination",
            "0 Make a packing list | Write down what to bring > List the clothes ; List the rest",
            "6 Do a load of laundry | Wash the clothes you need"
            " > Start the washer ; Hang the clothes",
            "1 Pack the clothes | Fold the clothes into the suitcase"
            " > Pack the shirts ; Pack the pants ; Pack the socks",
            "4 Pack the toiletries | Fill the toiletry bag"
            " > Grab the toothbrush ; Grab the shampoo",
            "7 Charge your devices | Pack the chargers > Find the chargers ; Pack them",
            "2 Pack documents and wallet | Gather your ID and tickets"
            " > Find your ID ; Find the tickets",
            "8 Arrange care for plants and pets | Ask someone to check on the house"
            " > Text a neighbor ; Leave a key",
            "5 Weigh the suitcase | Check the bag weight > Lift the suitcase ; Check the scale",
            "9 Put the bag by the door | Set everything by the door"
            " > Zip the bag ; Move it to the door",
        ),
    ),
)
# fmt: on
