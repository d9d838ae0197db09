"""MoEngage credentials from Secrets Manager, cached by Powertools and re-read on demand (key rotation)."""

from __future__ import annotations

from pydantic import ValidationError

from aep_moengage.delivery.client import MoEngageCredentials
from aep_moengage.secrets import SecretUnavailableError, get_json_secret


class SecretCredentials:
    """A `CredentialsSource` reading `{"workspace_id", "data_api_key", "data_center"}` from the named secret."""

    def __init__(self, secret_name: str, *, max_age_seconds: int) -> None:
        self._secret_name = secret_name
        self._max_age = max_age_seconds

    def __call__(self, *, force: bool = False) -> MoEngageCredentials:
        value = get_json_secret(self._secret_name, max_age=self._max_age, force_fetch=force)
        try:
            return MoEngageCredentials.model_validate(value)
        except ValidationError as error:
            # Field names only: the secret's values never reach an error message.
            missing = sorted({str(issue["loc"][0]) for issue in error.errors() if issue["loc"]})
            raise SecretUnavailableError(
                f"secret {self._secret_name!r} lacks valid fields {missing} (expected workspace_id, data_api_key)"
            ) from None
