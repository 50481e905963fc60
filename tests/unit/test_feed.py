"""What a write tells PostgreSQL's listeners: a payload within NOTIFY's limit."""

from hypothesis import given
from hypothesis import strategies as st

from virtpolicy.store.feed import payload

#: PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
NOTIFY_LIMIT = 8000

NAMES = st.lists(
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=255), max_size=40
)


def test_eight_long_emoji_names_fit() -> None:
    """Eight names of 254 emoji and a digit (8,160 bytes of names) fit: once
    refused as "payload string too long", as the cut counted characters."""
    guests = ["\U0001f601" * 254 + str(i) for i in range(8)]
    told = payload(
        1, 8, guests, [[i, g, 1, "create", "t", "now", "{}"] for i, g in enumerate(guests)]
    )
    assert len(told.encode()) < NOTIFY_LIMIT
    assert told.startswith("1-8 \U0001f601")
    assert told.split("\n")[0].endswith(",...")


@given(NAMES)
def test_any_names_fit_in_a_notification(guests: list[str]) -> None:
    """Whatever the names, the payload is UTF-8 under the limit, and names the
    guests it carries in full or ends in "..."."""
    told = payload(3, 3 + len(guests), guests, [[g] * 7 for g in guests])
    assert len(told.encode()) < NOTIFY_LIMIT
    first = told.split("\n")[0]
    names = first.split(" ", 1)[1]
    assert names == ",".join(guests) or names.endswith(",...")
