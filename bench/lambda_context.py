"""A Lambda context for benchmarks that call a handler: its remaining time counts down from the
invocation's start, as Lambda's does."""

from __future__ import annotations

import time
import uuid

REGION = "eu-west-1"


class LambdaContext:
    def __init__(self, seconds: float, function_name: str = "bench", memory_mb: int = 1024) -> None:
        self._end = time.monotonic() + seconds
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)
