"""The `verification` job's data: a code to send, on which channel, to whom, for what."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gatehouse.selfservice.fields import Channel, JobData


class VerificationJob(JobData):
    channel: Channel
    to: Annotated[str, Field(min_length=1, max_length=320)]
    purpose: Literal["register", "recovery"]
