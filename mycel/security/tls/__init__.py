"""libp2p TLS 1.3 (``/tls/1.0.0``) and the certificates it shares with QUIC."""

from mycel.security.tls.certificate import (
    EXTENSION_OID,
    SIGNATURE_PREFIX,
    CertificateCache,
    LocalCertificate,
    VerificationCache,
    VerifiedPeer,
    decode_signed_key,
    encode_signed_key,
    generate_certificate,
    verify_certificate,
    verify_certificate_chain,
)
from mycel.security.tls.connection import TLSConnection
from mycel.security.tls.protocol import TLS
from mycel.security.tls.session import ALPN_LIBP2P, TLSSession

__all__ = [
    "TLS",
    "TLSConnection",
    "TLSSession",
    "ALPN_LIBP2P",
    "EXTENSION_OID",
    "SIGNATURE_PREFIX",
    "CertificateCache",
    "LocalCertificate",
    "VerifiedPeer",
    "VerificationCache",
    "decode_signed_key",
    "encode_signed_key",
    "generate_certificate",
    "verify_certificate",
    "verify_certificate_chain",
]
