// The reference implementations that check consentwatch's evidence bundles in CI
// (tests/evidence/test_reference_go.py): Go's signed-note package and transparency-dev's
// Merkle proofs; the attestation with go-securesystemslib's DSSE and in-toto's
// Statement v1. Versions that build with Go 1.19 (Debian 12's golang-go) and later:
// go-securesystemslib v0.8.0 (later ones need golang.org/x/crypto v0.31+, which needs
// Go 1.20's crypto/ecdh), x/crypto held at v0.17.0 (it has the Go 1.19 curve25519),
// in-toto/attestation v1.1.0 (later ones need protobuf v1.36, Go 1.21).
module consentwatch.invalid/tests/reference

go 1.19

require (
	github.com/in-toto/attestation v1.1.0
	github.com/secure-systems-lab/go-securesystemslib v0.8.0
	github.com/transparency-dev/merkle v0.0.2
	golang.org/x/mod v0.20.0
	google.golang.org/protobuf v1.34.1
)

require (
	golang.org/x/crypto v0.17.0 // indirect
	golang.org/x/sys v0.15.0 // indirect
)
