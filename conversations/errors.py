from __future__ import annotations

import uuid
from collections.abc import Sequence

from common.errors import ApiError, InvalidRequestError


class DirectNeedsOnePeerError(ApiError):
    status = 400
    code = "direct_needs_one_peer"
    message = "A direct conversation names exactly one other user."


class ConversationTooManyMembersError(InvalidRequestError):
    def __init__(self, max_members: int) -> None:
        super().__init__({"members": [f"At most {max_members} members, the creator included."]})


class WrappedKeysDuplicateDeviceError(InvalidRequestError):
    def __init__(self) -> None:
        super().__init__({"wrapped_keys": ["Each device_id may appear only once."]})


class ConversationNotFoundError(ApiError):
    status = 404
    code = "conversation_not_found"
    message = "No such conversation."


class ConversationIdTakenError(ApiError):
    status = 409
    code = "conversation_id_taken"
    message = "This conversation id is taken."


class DirectConversationExistsError(ApiError):
    status = 409
    code = "direct_conversation_exists"
    message = "A direct conversation with this user exists."

    def __init__(self, conversation_id: uuid.UUID) -> None:
        super().__init__(extra={"conversation_id": str(conversation_id)})


class MissingDevicesError(ApiError):
    status = 409
    code = "missing_devices"
    message = "The wrapped keys lack active devices of members."

    def __init__(self, missing: Sequence[tuple[str, uuid.UUID]]) -> None:
        super().__init__(extra={"missing_devices": [{"username": u, "device_id": str(d)} for u, d in sorted(missing)]})


class UnexpectedDevicesError(ApiError):
    status = 409
    code = "unexpected_devices"
    message = "The wrapped keys name devices that are not active devices of members."

    def __init__(self, device_ids: Sequence[uuid.UUID]) -> None:
        super().__init__(extra={"device_ids": sorted(str(d) for d in device_ids)})


class EpochConflictError(ApiError):
    status = 409
    code = "epoch_conflict"
    message = "The new epoch must be the current epoch + 1."

    def __init__(self, current_epoch: int) -> None:
        super().__init__(extra={"current_epoch": current_epoch})


class EpochNotFoundError(ApiError):
    status = 404
    code = "epoch_not_found"
    message = "No such epoch in a conversation of this account."

    def __init__(self, conversation_id: uuid.UUID, epoch: int) -> None:
        super().__init__(extra={"conversation_id": str(conversation_id), "epoch": epoch})


class LinkKeysDuplicateError(InvalidRequestError):
    def __init__(self) -> None:
        super().__init__({"wrapped_keys": ["Each (conversation_id, epoch) may appear only once."]})


class KeyRequestNotFoundError(ApiError):
    status = 404
    code = "key_request_not_found"
    message = "No such open key request in a conversation of this account."


class KeyRequestClosedError(ApiError):
    status = 409
    code = "key_request_closed"
    message = "The requesting device is no longer an active device of a member."


class DirectConversationMembersFixedError(ApiError):
    status = 409
    code = "direct_members_fixed"
    message = "A direct conversation's members cannot change."


class AlreadyMemberError(ApiError):
    status = 409
    code = "already_member"
    message = "This user is a member already."


class MemberNotFoundError(ApiError):
    status = 404
    code = "member_not_found"
    message = "This user is not a member of the conversation."


class EpochRequiredError(ApiError):
    status = 400
    code = "epoch_required"
    message = "This change must carry the next epoch, wrapped for exactly the members' active devices."


class HistoryKeysMismatchError(ApiError):
    status = 409
    code = "history_keys_mismatch"
    message = "The history keys must cover every epoch for every active device of the new member, and no more."

    def __init__(self, missing: int, unexpected: int) -> None:
        super().__init__(extra={"missing": missing, "unexpected": unexpected})


class HistoryNotSharedError(ApiError):
    status = 409
    code = "history_not_shared"
    message = "This conversation does not share history: add members with a new epoch and no history keys."
