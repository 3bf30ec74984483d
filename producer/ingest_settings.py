"""The HTTP ingest API's settings (`--ingest.*`, LOGSHIP_INGEST__*): on or off, its limits, its
receipts and its bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, model_validator

from logship.cli import SettingProblem

MIB = 1024 * 1024


class IngestSettings(BaseModel):
    """POST /v1/lines and GET /v1/receipts/{id} on the producer's --http.port."""

    enabled: bool = Field(
        default=False,
        description="serve the ingest API (off by default: an open write endpoint on every "
        "producer would be a surprise; give it a token)",
    )
    max_body_bytes: Annotated[int, Field(ge=1, le=256 * MIB)] = Field(
        default=8 * MIB, description="largest request body, after gzip (413 past it)"
    )
    max_in_flight_bytes: Annotated[int, Field(ge=1, le=4096 * MIB)] = Field(
        default=32 * MIB,
        description="bytes received and not yet confirmed by the broker; past it 429 with "
        "Retry-After (the confirm window: bounds the producer's memory)",
    )
    read_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="seconds a client has to send its whole body (408 after)"
    )
    confirm_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="seconds a POST waits for the broker's confirm (503 with Retry-After after; "
        "retry with the same Idempotency-Key)",
    )
    max_wait: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=60.0, description="longest ?wait=written&timeout= a client may ask for"
    )
    receipts_max: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=100_000, description="receipts kept in memory (the oldest go first)"
    )
    receipts_ttl: Annotated[float, Field(gt=0, le=7 * 86400)] = Field(
        default=900.0, description="seconds a receipt is kept after its POST (404 after)"
    )
    token: SecretStr | None = Field(
        default=None,
        description="bearer token the API requires (better: LOGSHIP_INGEST__TOKEN or "
        "--ingest.token-file; flags show in ps)",
        json_schema_extra={"metavar": "KEY", "unset": "no authentication"},
    )
    token_file: Path | None = Field(
        default=None,
        description="file holding the bearer token (a mounted Secret), read at start",
        json_schema_extra={"metavar": "PATH", "unset": "no authentication"},
    )

    @model_validator(mode="after")
    def _one_token(self) -> IngestSettings:
        if self.token is not None and self.token_file is not None:
            raise SettingProblem("token_file", "give the token or a token file, not both")
        if self.token is not None and not self.token.get_secret_value().strip():
            raise SettingProblem("token", "the token is empty")
        if self.token_file is not None:
            try:
                text = self.token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or str(error)
                raise SettingProblem(
                    "token_file", f"cannot read {self.token_file}: {reason}"
                ) from None
            if not text:
                raise SettingProblem("token_file", f"{self.token_file} is empty")
        return self

    def bearer_token(self) -> str | None:
        """The token clients must send, or None: no authentication."""
        if self.token is not None:
            return self.token.get_secret_value().strip()
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return None
