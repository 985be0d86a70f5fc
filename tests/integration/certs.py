"""Test certificates built with python3-cryptography: a CA, server and client
certificates it signs, and the bad ones (self-signed rogue, expired, wrong
key usage) that a server verifying clients must refuse."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _ku(digital_signature=True, key_encipherment=False, cert_sign=False):
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _write(d, stem, cert, key):
    cpath, kpath = str(d / (stem + ".pem")), str(d / (stem + ".key"))
    with open(cpath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kpath, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cpath, kpath


class Certs:
    """Writes PEM files into directory d. Paths are (cert, key) tuples."""

    def __init__(self, d):
        self.d = d
        now = datetime.datetime.utcnow()
        self.ca_key = _key("ec")
        self.ca_cert = (x509.CertificateBuilder().subject_name(_name("chatd test CA"))
                        .issuer_name(_name("chatd test CA")).public_key(self.ca_key.public_key())
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .add_extension(_ku(digital_signature=False, cert_sign=True), critical=True)
                        .sign(self.ca_key, hashes.SHA256()))
        self.ca = _write(d, "ca", self.ca_cert, self.ca_key)[0]

    def issue(self, stem, cn, kind="ec", eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), ku=None,
              not_before=None, not_after=None, self_signed=False, san=False):
        now = datetime.datetime.utcnow()
        key = _key(kind)
        signer_key = key if self_signed else self.ca_key
        issuer = _name(cn) if self_signed else self.ca_cert.subject
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(not_before or now - DAY).not_valid_after(not_after or now + 30 * DAY)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if ku is None:
            ku = _ku(key_encipherment=(kind == "rsa"))
        if ku is not False:
            b = b.add_extension(ku, critical=True)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return _write(self.d, stem, b.sign(signer_key, hashes.SHA256()), key)

    def server(self, kind="rsa"):
        """A server certificate for 127.0.0.1/localhost (RSA by default, so that
        static-RSA key exchange would be possible if the server allowed it)."""
        return self.issue("server-" + kind, "localhost", kind=kind,
                          eku=(ExtendedKeyUsageOID.SERVER_AUTH,), san=True)

    def client(self):
        return self.issue("client", "alice")

    def rogue(self):
        """Self-signed, same subject as a real client: openssl verify -CAfile refuses it."""
        return self.issue("rogue", "alice", self_signed=True)

    def expired(self):
        now = datetime.datetime.utcnow()
        return self.issue("expired", "alice", not_before=now - 10 * DAY, not_after=now - DAY)

    def server_only(self):
        """From the CA, but for TLS servers only (extendedKeyUsage serverAuth)."""
        return self.issue("serveronly", "alice", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))

    def no_signature_usage(self):
        """From the CA, but keyUsage without digitalSignature (cannot sign a handshake)."""
        return self.issue("nosig", "alice", eku=None, ku=_ku(digital_signature=False, key_encipherment=True))
