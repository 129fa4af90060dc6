"""Publish/subscribe: gossipsub v1.0/v1.1/v1.2 and floodsub, with peer scoring.

```python
config = HostConfig(services=[Identify(), Ping(), Gossipsub()])
async with open_host(config) as host:
    pubsub = host.service(Gossipsub)
    async with pubsub.subscribe("chat") as sub:
        await pubsub.wait_ready("chat", min_peers=1)
        await pubsub.publish("chat", b"hello")
        async for msg in sub:
            print(msg.source, msg.data)
```

The parts: :mod:`.core` (the sans-IO router), :mod:`.score` (peer scoring P1–P7), :mod:`.config`
(parameters and presets), :mod:`.messages` (signing, message ids), :mod:`.service` (the trio driver).
"""

from mycel.protocols.pubsub.config import (
    FLOODSUB,
    GOSSIPSUB_PROTOCOLS,
    GOSSIPSUB_V10,
    GOSSIPSUB_V11,
    GOSSIPSUB_V12,
    GossipsubConfig,
    SignaturePolicy,
    ethereum_consensus,
    go_defaults,
    spec_defaults,
)
from mycel.protocols.pubsub.core import (
    GossipsubRouter,
    InvalidMessageReceived,
    MessageDropped,
    PeerGraylisted,
    PeerJoinedTopic,
    PeerLeftTopic,
    PubsubEvent,
    SlowPeer,
    ValidationResult,
)
from mycel.protocols.pubsub.messages import (
    PublishError,
    PubsubError,
    PubsubMessage,
    content_hash_message_id,
    default_message_id,
    ethereum_message_id,
)
from mycel.protocols.pubsub.score import (
    PeerScoreParams,
    PeerScoreThresholds,
    ScoreBreakdown,
    TopicScoreBreakdown,
    TopicScoreParams,
)
from mycel.protocols.pubsub.service import Floodsub, Gossipsub, PublishReport, Subscription, Validator

__all__ = [
    "FLOODSUB",
    "GOSSIPSUB_PROTOCOLS",
    "GOSSIPSUB_V10",
    "GOSSIPSUB_V11",
    "GOSSIPSUB_V12",
    "Floodsub",
    "Gossipsub",
    "GossipsubConfig",
    "GossipsubRouter",
    "InvalidMessageReceived",
    "MessageDropped",
    "PeerGraylisted",
    "PeerJoinedTopic",
    "PeerLeftTopic",
    "PeerScoreParams",
    "PeerScoreThresholds",
    "PublishError",
    "PublishReport",
    "PubsubError",
    "PubsubEvent",
    "PubsubMessage",
    "ScoreBreakdown",
    "SignaturePolicy",
    "SlowPeer",
    "Subscription",
    "TopicScoreBreakdown",
    "TopicScoreParams",
    "ValidationResult",
    "Validator",
    "content_hash_message_id",
    "default_message_id",
    "ethereum_consensus",
    "ethereum_message_id",
    "go_defaults",
    "spec_defaults",
]
