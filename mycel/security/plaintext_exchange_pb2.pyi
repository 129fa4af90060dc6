from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Exchange(_message.Message):
    __slots__ = ("id", "pubkey")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUBKEY_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    pubkey: bytes
    def __init__(self, id: _Optional[bytes] = ..., pubkey: _Optional[bytes] = ...) -> None: ...
