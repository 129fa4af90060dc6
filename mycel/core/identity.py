"""A host's identity: its private key, public key and peer id, with key-file helpers."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import final

from mycel.core.keys import (
    Ed25519PrivateKey,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    private_key_from_protobuf,
)
from mycel.core.peer_id import PeerId

__all__ = ["Identity"]

log = logging.getLogger("mycel.core.identity")


@final
class Identity:
    """A key pair and the peer id derived from it. ``repr`` shows only the peer id."""

    __slots__ = ("private_key", "public_key", "peer_id")

    private_key: PrivateKey
    public_key: PublicKey
    peer_id: PeerId

    def __init__(self, private_key: PrivateKey) -> None:
        object.__setattr__(self, "private_key", private_key)
        object.__setattr__(self, "public_key", private_key.public_key)
        object.__setattr__(self, "peer_id", PeerId.from_public_key(private_key.public_key))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Identity is immutable")

    @classmethod
    def generate(cls, key_type: KeyType = KeyType.Ed25519) -> Identity:
        """A new identity with a fresh key of ``key_type`` (RSA keys are 2048 bits); nothing is written to disk."""
        return cls(generate_private_key(key_type))

    @classmethod
    def from_private_key(cls, key: PrivateKey) -> Identity:
        """The identity of an existing private key (its public key and peer id are derived from it)."""
        return cls(key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The Ed25519 identity for a 32-byte seed (as test-plans and gossipsub-interop derive them)."""
        return cls(Ed25519PrivateKey.from_seed(seed))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a file holding a ``PrivateKey`` protobuf. Raises DecodeError if it is not one."""
        p = Path(path)
        data = p.read_bytes()
        mode = p.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is accessible by group/others (mode %o)", p, stat.S_IMODE(mode))
        return cls(private_key_from_protobuf(data))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str], key_type: KeyType = KeyType.Ed25519) -> Identity:
        """Load ``path``, or create it (mode 0600) with a new key.

        Creation is atomic: the key is written to a temporary file and hard-linked into place, so
        concurrent callers all end up with the same key and nobody sees a partial file.
        """
        p = Path(path)
        try:
            return cls.load(p)
        except FileNotFoundError:
            pass
        identity = cls.generate(key_type)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # e.g. ~/.mycel on a fresh machine
        tmp = _write_temp(p, identity.private_key.to_protobuf())
        try:
            try:
                os.link(tmp, p)
            except FileExistsError:
                return cls.load(p)  # another process won the race; use its key
            except OSError:
                # Filesystems without hard links: fall back to an exclusive create.
                try:
                    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    return cls.load(p)
                with os.fdopen(fd, "wb") as f:
                    f.write(identity.private_key.to_protobuf())
                    f.flush()
                    os.fsync(f.fileno())
            _fsync_dir(p.parent)
        finally:
            os.unlink(tmp)
        log.info("created identity %s in %s", identity.peer_id, p)
        return identity

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``PrivateKey`` protobuf to ``path`` (mode 0600), atomically replacing it."""
        p = Path(path)
        tmp = _write_temp(p, self.private_key.to_protobuf())
        try:
            os.replace(tmp, p)
        except BaseException:
            os.unlink(tmp)
            raise
        _fsync_dir(p.parent)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.private_key == other.private_key

    def __hash__(self) -> int:
        return hash(self.peer_id)

    def __repr__(self) -> str:
        return f"<Identity {self.peer_id}>"


def _write_temp(target: Path, data: bytes) -> str:
    """Write ``data`` to a new 0600 file next to ``target``, fsynced; return its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates the file with mode 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
