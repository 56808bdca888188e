"""WeCom error codes the lifecycle code reacts to (https://developer.work.weixin.qq.com/document/path/90313)."""

from __future__ import annotations

#: send_welcome_msg: the customer already started chatting with the staff member: final.
ALREADY_CHATTING = 41051
#: send_welcome_msg: the welcome code is invalid or expired (past its 20 s): final.
INVALID_WELCOME_CODE = 41096
#: The staff member and the customer have no relationship (deleted meanwhile): final.
NO_RELATIONSHIP = 84061
#: The userid is not a member of the corp.
INVALID_USERID = 60111
#: A corp tag name already exists in its group.
TAG_NAME_EXISTS = 40071
#: A tag id no longer exists in the corp (deleted on the WeCom side).
INVALID_TAG_ID = 40068

#: Never worth another try within the same welcome window.
WELCOME_FINAL_ERRCODES = frozenset({ALREADY_CHATTING, INVALID_WELCOME_CODE, NO_RELATIONSHIP, INVALID_USERID})
