"""Errors raised while reading wire data; each names what is wrong so a dead letter can say why."""


class ProtocolError(ValueError):
    """Input that does not follow the wire protocol.

    Attributes:
        reason: a short, stable machine code (``bad_json``, ``bad_signature``...), used as the
            dead-letter reason and counter key.
        detail: a human-readable explanation naming the offending field.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
