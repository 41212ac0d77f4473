"""Sentences every platform says the same way, written once."""

from __future__ import annotations

INTERNAL = "Something went wrong on my side; it has been logged. Please try again."
GONE = "I cannot find that image any more; start a new request with /imagine."
UPSCALE_PROMPT = "Recreate this exact image at a higher resolution; change nothing else."
VARY_PROMPT = (
    "Make a variation of this image: keep its subject, composition and style, and change "
    "the details."
)
RESUMED = "I was restarted while reading your message; working on it again now."
BLEND_PROMPT = "Blend these images into one image"
BLEND_LAST_TWO = "Blend the last two images of this conversation into one image"
BLEND_NEEDS_TWO = "A blend needs at least two images: attach two or more and try again."
DESCRIBE_NEEDS_ONE = "Describe reads one image: attach exactly one and try again."
DESCRIBE_NOTHING = "The model had no prompt to suggest for this image; try another image."
CANCELLED_QUEUED = "Cancelled before it was sent to the model."
CANCELLED_RUNNING = "Cancelled while it was being made; the image is not shown."
CANCELLING = "Cancelling: the image being made will not be shown."
ONLY_REQUESTER_CANCELS = "Only whoever asked for this image can cancel it."


def other_tenant(noun: str) -> str:
    """The image belongs to another workspace (Slack) or server (Discord)."""
    return f"That image belongs to another {noun}."
