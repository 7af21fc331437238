from __future__ import annotations

from collections.abc import Sequence

from common.errors import ApiError


class UsernameTakenError(ApiError):
    status = 409
    code = "username_taken"
    message = "This username is taken."


class PasswordInvalidError(ApiError):
    status = 400
    code = "password_invalid"
    message = "The password was refused."

    def __init__(self, messages: Sequence[str]) -> None:
        super().__init__(extra={"messages": list(messages)})


class InvalidCredentialsError(ApiError):
    status = 401
    code = "invalid_credentials"
    message = "Wrong username or password."


class UserNotFoundError(ApiError):
    status = 404
    code = "user_not_found"
    message = "No such user."

    def __init__(self, usernames: Sequence[str]) -> None:
        super().__init__(extra={"usernames": sorted(usernames)})
