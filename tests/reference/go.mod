// The reference implementations that check consentwatch's evidence bundles in CI
// (tests/evidence/test_reference_go.py): Go's signed-note package and transparency-dev's
// Merkle proofs. Versions that build with Go 1.19 (Debian 12's golang-go) and later.
module consentwatch.invalid/tests/reference

go 1.19

require (
	github.com/transparency-dev/merkle v0.0.2
	golang.org/x/mod v0.20.0
)
