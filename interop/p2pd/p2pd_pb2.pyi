from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Request(_message.Message):
    __slots__ = ("type", "connect", "streamOpen", "streamHandler", "dht", "disconnect", "pubsub")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        IDENTIFY: _ClassVar[Request.Type]
        CONNECT: _ClassVar[Request.Type]
        STREAM_OPEN: _ClassVar[Request.Type]
        STREAM_HANDLER: _ClassVar[Request.Type]
        DHT: _ClassVar[Request.Type]
        LIST_PEERS: _ClassVar[Request.Type]
        CONNMANAGER: _ClassVar[Request.Type]
        DISCONNECT: _ClassVar[Request.Type]
        PUBSUB: _ClassVar[Request.Type]
    IDENTIFY: Request.Type
    CONNECT: Request.Type
    STREAM_OPEN: Request.Type
    STREAM_HANDLER: Request.Type
    DHT: Request.Type
    LIST_PEERS: Request.Type
    CONNMANAGER: Request.Type
    DISCONNECT: Request.Type
    PUBSUB: Request.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FIELD_NUMBER: _ClassVar[int]
    STREAMOPEN_FIELD_NUMBER: _ClassVar[int]
    STREAMHANDLER_FIELD_NUMBER: _ClassVar[int]
    DHT_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_FIELD_NUMBER: _ClassVar[int]
    type: Request.Type
    connect: ConnectRequest
    streamOpen: StreamOpenRequest
    streamHandler: StreamHandlerRequest
    dht: DHTRequest
    disconnect: DisconnectRequest
    pubsub: PSRequest
    def __init__(self, type: _Optional[_Union[Request.Type, str]] = ..., connect: _Optional[_Union[ConnectRequest, _Mapping]] = ..., streamOpen: _Optional[_Union[StreamOpenRequest, _Mapping]] = ..., streamHandler: _Optional[_Union[StreamHandlerRequest, _Mapping]] = ..., dht: _Optional[_Union[DHTRequest, _Mapping]] = ..., disconnect: _Optional[_Union[DisconnectRequest, _Mapping]] = ..., pubsub: _Optional[_Union[PSRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("type", "error", "streamInfo", "identify", "dht", "peers", "pubsub")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[Response.Type]
        ERROR: _ClassVar[Response.Type]
    OK: Response.Type
    ERROR: Response.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STREAMINFO_FIELD_NUMBER: _ClassVar[int]
    IDENTIFY_FIELD_NUMBER: _ClassVar[int]
    DHT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    PUBSUB_FIELD_NUMBER: _ClassVar[int]
    type: Response.Type
    error: ErrorResponse
    streamInfo: StreamInfo
    identify: IdentifyResponse
    dht: DHTResponse
    peers: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    pubsub: PSResponse
    def __init__(self, type: _Optional[_Union[Response.Type, str]] = ..., error: _Optional[_Union[ErrorResponse, _Mapping]] = ..., streamInfo: _Optional[_Union[StreamInfo, _Mapping]] = ..., identify: _Optional[_Union[IdentifyResponse, _Mapping]] = ..., dht: _Optional[_Union[DHTResponse, _Mapping]] = ..., peers: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ..., pubsub: _Optional[_Union[PSResponse, _Mapping]] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("id", "addrs")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[bytes] = ..., addrs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("peer", "addrs", "timeout")
    PEER_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    peer: bytes
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    timeout: int
    def __init__(self, peer: _Optional[bytes] = ..., addrs: _Optional[_Iterable[bytes]] = ..., timeout: _Optional[int] = ...) -> None: ...

class StreamOpenRequest(_message.Message):
    __slots__ = ("peer", "proto", "timeout")
    PEER_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    peer: bytes
    proto: _containers.RepeatedScalarFieldContainer[str]
    timeout: int
    def __init__(self, peer: _Optional[bytes] = ..., proto: _Optional[_Iterable[str]] = ..., timeout: _Optional[int] = ...) -> None: ...

class StreamHandlerRequest(_message.Message):
    __slots__ = ("addr", "proto", "balanced")
    ADDR_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    addr: bytes
    proto: _containers.RepeatedScalarFieldContainer[str]
    balanced: bool
    def __init__(self, addr: _Optional[bytes] = ..., proto: _Optional[_Iterable[str]] = ..., balanced: _Optional[bool] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: bytes
    def __init__(self, peer: _Optional[bytes] = ...) -> None: ...

class ErrorResponse(_message.Message):
    __slots__ = ("msg",)
    MSG_FIELD_NUMBER: _ClassVar[int]
    msg: str
    def __init__(self, msg: _Optional[str] = ...) -> None: ...

class StreamInfo(_message.Message):
    __slots__ = ("peer", "addr", "proto")
    PEER_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    peer: bytes
    addr: bytes
    proto: str
    def __init__(self, peer: _Optional[bytes] = ..., addr: _Optional[bytes] = ..., proto: _Optional[str] = ...) -> None: ...

class PeerInfo(_message.Message):
    __slots__ = ("id", "addrs")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[bytes] = ..., addrs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PSRequest(_message.Message):
    __slots__ = ("type", "topic", "data")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        GET_TOPICS: _ClassVar[PSRequest.Type]
        LIST_PEERS: _ClassVar[PSRequest.Type]
        PUBLISH: _ClassVar[PSRequest.Type]
        SUBSCRIBE: _ClassVar[PSRequest.Type]
    GET_TOPICS: PSRequest.Type
    LIST_PEERS: PSRequest.Type
    PUBLISH: PSRequest.Type
    SUBSCRIBE: PSRequest.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    type: PSRequest.Type
    topic: str
    data: bytes
    def __init__(self, type: _Optional[_Union[PSRequest.Type, str]] = ..., topic: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class PSMessage(_message.Message):
    __slots__ = ("data", "seqno", "topicIDs", "signature", "key")
    FROM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEQNO_FIELD_NUMBER: _ClassVar[int]
    TOPICIDS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    seqno: bytes
    topicIDs: _containers.RepeatedScalarFieldContainer[str]
    signature: bytes
    key: bytes
    def __init__(self, data: _Optional[bytes] = ..., seqno: _Optional[bytes] = ..., topicIDs: _Optional[_Iterable[str]] = ..., signature: _Optional[bytes] = ..., key: _Optional[bytes] = ..., **kwargs) -> None: ...

class PSResponse(_message.Message):
    __slots__ = ("topics", "peerIDs")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    PEERIDS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    peerIDs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., peerIDs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DHTRequest(_message.Message):
    __slots__ = ("type", "peer", "cid", "key", "value", "count", "timeout")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FIND_PEER: _ClassVar[DHTRequest.Type]
        FIND_PEERS_CONNECTED_TO_PEER: _ClassVar[DHTRequest.Type]
        FIND_PROVIDERS: _ClassVar[DHTRequest.Type]
        GET_CLOSEST_PEERS: _ClassVar[DHTRequest.Type]
        GET_PUBLIC_KEY: _ClassVar[DHTRequest.Type]
        GET_VALUE: _ClassVar[DHTRequest.Type]
        SEARCH_VALUE: _ClassVar[DHTRequest.Type]
        PUT_VALUE: _ClassVar[DHTRequest.Type]
        PROVIDE: _ClassVar[DHTRequest.Type]
    FIND_PEER: DHTRequest.Type
    FIND_PEERS_CONNECTED_TO_PEER: DHTRequest.Type
    FIND_PROVIDERS: DHTRequest.Type
    GET_CLOSEST_PEERS: DHTRequest.Type
    GET_PUBLIC_KEY: DHTRequest.Type
    GET_VALUE: DHTRequest.Type
    SEARCH_VALUE: DHTRequest.Type
    PUT_VALUE: DHTRequest.Type
    PROVIDE: DHTRequest.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    type: DHTRequest.Type
    peer: bytes
    cid: bytes
    key: bytes
    value: bytes
    count: int
    timeout: int
    def __init__(self, type: _Optional[_Union[DHTRequest.Type, str]] = ..., peer: _Optional[bytes] = ..., cid: _Optional[bytes] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., count: _Optional[int] = ..., timeout: _Optional[int] = ...) -> None: ...

class DHTResponse(_message.Message):
    __slots__ = ("type", "peer", "value")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BEGIN: _ClassVar[DHTResponse.Type]
        VALUE: _ClassVar[DHTResponse.Type]
        END: _ClassVar[DHTResponse.Type]
    BEGIN: DHTResponse.Type
    VALUE: DHTResponse.Type
    END: DHTResponse.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: DHTResponse.Type
    peer: PeerInfo
    value: bytes
    def __init__(self, type: _Optional[_Union[DHTResponse.Type, str]] = ..., peer: _Optional[_Union[PeerInfo, _Mapping]] = ..., value: _Optional[bytes] = ...) -> None: ...
