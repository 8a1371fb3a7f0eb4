// refcheck verifies consentwatch evidence bundles with the reference implementations
// of what they claim, independently of consentwatch's own Python verifier:
//
//   - the manifest's Ed25519 signature (crypto/ed25519);
//   - the checkpoint, a C2SP signed note, with golang.org/x/mod/sumdb/note: note.Open
//     with a verifier built by note.NewEd25519VerifierKey from the PEM public key given
//     (never from the bundle), and the manifest's verifier_key must be that same key;
//   - every entry's leaf hash and inclusion proof with github.com/transparency-dev/merkle
//     (rfc6962.DefaultHasher, proof.VerifyInclusion); each entry a record of its file's
//     kind with the id the manifest lists, no leaf twice, each file in ledger order;
//   - the consistency proof from the previous export's checkpoint (manifest `previous`,
//     itself opened with note.Open) with proof.VerifyConsistency;
//   - with -since OLD: that OLD's checkpoint is consistent with NEW's, using NEW's
//     carried proof when its previous checkpoint is OLD's, else the -proof file written
//     by `consentwatch ledger prove`;
//   - with -witness VKEY (repeatable): the witness cosignatures of the checkpoint, C2SP
//     tlog-cosignature (cosignature/v1), with crypto/ed25519 following the spec: the
//     signature lines are the ones note.Open parsed and left unverified (keys it does not
//     know), the key id is SHA-256(name || "\n" || 0x04 || key)[:4], the signed message
//     "cosignature/v1\ntime <t>\n" || the note text; at least -require-witnesses of them
//     (default: all) must verify.
//   - the in-toto attestation (attestation.intoto.jsonl, required from format /4): its
//     DSSE envelope with github.com/secure-systems-lab/go-securesystemslib (dsse's
//     EnvelopeVerifier, PAE included, and its Ed25519 verifier, whose key id is the one
//     dsse.SHA256KeyID derives from the key), its payload decoded as an in-toto
//     Statement v1 by github.com/in-toto/attestation/go/v1 (protojson, Validate); the
//     subjects must be exactly the bundle's files with their SHA-256, the predicate the
//     manifest's purpose, query, checkpoint and counts.
//
// Usage:
//
//	refcheck -pub consentwatch.pub BUNDLE_DIR
//	refcheck -pub consentwatch.pub -since OLD_DIR [-proof FILE] NEW_DIR
//	refcheck -pub consentwatch.pub -witness W1.vkey -witness W2.vkey [-require-witnesses N] BUNDLE_DIR
//
// Prints one "FAIL ..." line per problem and exits 1, or "OK ..." lines and exits 0;
// a usage error exits 2.
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	attestationFile      = "attestation.intoto.jsonl"
	inTotoPayloadType    = "application/vnd.in-toto+json"
	exportPredicateType  = "https://consentwatch.dev/evidence-export/v1"
	formatPrefix         = "consentwatch-evidence-bundle/"
	firstAttestedVersion = 4
)

type entry struct {
	ID             string   `json:"id"`
	LeafIndex      uint64   `json:"leaf_index"`
	LeafHash       string   `json:"leaf_hash"`
	InclusionProof []string `json:"inclusion_proof"`
}

type previous struct {
	Checkpoint       string   `json:"checkpoint"`
	ManifestSHA256   string   `json:"manifest_sha256"`
	ConsistencyProof []string `json:"consistency_proof"`
}

type witnessFlags []string

func (w *witnessFlags) String() string     { return strings.Join(*w, ",") }
func (w *witnessFlags) Set(v string) error { *w = append(*w, v); return nil }

type manifest struct {
	Format      string    `json:"format"`
	Purpose     string    `json:"purpose"`
	CreatedAt   string    `json:"created_at"`
	Window      any       `json:"window"`
	Filters     any       `json:"filters"`
	Checkpoint  string    `json:"checkpoint"`
	VerifierKey string    `json:"verifier_key"`
	Findings    []entry   `json:"findings"`
	Amendments  []entry   `json:"amendments"`
	Reviews     []entry   `json:"reviews"`
	Exceptions  []entry   `json:"exceptions"`
	Previous    *previous `json:"previous"`
}

type proofFile struct {
	Format           string   `json:"format"`
	OldSize          uint64   `json:"old_size"`
	NewSize          uint64   `json:"new_size"`
	ConsistencyProof []string `json:"consistency_proof"`
}

type checkpoint struct {
	origin string
	size   uint64
	root   []byte
}

type checker struct {
	pub      ed25519.PublicKey
	vkey     string
	verifier note.Verifier
	dsse     dsse.Verifier
	failures []string
	proofs   int
	note     *note.Note // the bundle's checkpoint, once opened
	attested []string
}

// witness is a cosigner's key, from its C2SP verifier key <name>+<hex id>+<base64(0x04||key)>.
type witness struct {
	name string
	id   uint32
	key  ed25519.PublicKey
}

func parseWitness(text string) (*witness, error) {
	parts := strings.SplitN(strings.TrimSpace(text), "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("not a verifier key <name>+<id>+<key>")
	}
	id, err := hex.DecodeString(parts[1])
	if err != nil || len(id) != 4 {
		return nil, errors.New("bad key id")
	}
	material, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(material) != 1+ed25519.PublicKeySize || material[0] != 0x04 {
		return nil, errors.New("not a cosignature/v1 (0x04) Ed25519 key")
	}
	w := &witness{name: parts[0], id: binary.BigEndian.Uint32(id), key: material[1:]}
	if w.keyID() != w.id {
		return nil, errors.New("the key id is not SHA-256(name, 0x0A, 0x04, key)[:4]")
	}
	return w, nil
}

func (w *witness) keyID() uint32 {
	h := sha256.New()
	h.Write([]byte(w.name + "\n"))
	h.Write([]byte{0x04})
	h.Write(w.key)
	return binary.BigEndian.Uint32(h.Sum(nil)[:4])
}

// cosigned checks the opened checkpoint's cosignatures by the witnesses; it returns the
// names of those that verify and reports those that name a witness but do not.
func (c *checker) cosigned(witnesses []*witness) []string {
	var signed []string
	for _, w := range witnesses {
		for _, sig := range c.note.UnverifiedSigs {
			if sig.Name != w.name || sig.Hash != w.id {
				continue
			}
			blob, err := base64.StdEncoding.DecodeString(sig.Base64)
			if err != nil || len(blob) != 4+8+ed25519.SignatureSize {
				c.fail("cosignature of %s: not key id, timestamp and signature", w.name)
				continue
			}
			t := binary.BigEndian.Uint64(blob[4:12])
			msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, c.note.Text)
			if t >= 1<<63 || !ed25519.Verify(w.key, []byte(msg), blob[12:]) {
				c.fail("cosignature of %s: does not verify", w.name)
				continue
			}
			signed = append(signed, w.name)
			break // one line per witness counts once
		}
	}
	return signed
}

func (c *checker) fail(format string, args ...interface{}) {
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

// openCheckpoint opens a signed note with the trusted key and parses the C2SP
// checkpoint body: origin, decimal size, base64 root hash (extension lines ignored).
func (c *checker) openCheckpoint(text string) (*checkpoint, error) {
	n, err := c.open(text)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] == "" {
		return nil, errors.New("not a checkpoint: needs origin, size and root lines")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("tree size: %w", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return nil, errors.New("root is not a base64 SHA-256 hash")
	}
	return &checkpoint{origin: lines[0], size: size, root: root}, nil
}

func (c *checker) open(text string) (*note.Note, error) {
	n, err := note.Open([]byte(text), note.VerifierList(c.verifier))
	if err != nil {
		return nil, fmt.Errorf("note.Open: %w", err)
	}
	return n, nil
}

func decodeHashes(hexes []string) ([][]byte, error) {
	hashes := make([][]byte, 0, len(hexes))
	for _, h := range hexes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("%q is not a hex SHA-256 hash", h)
		}
		hashes = append(hashes, b)
	}
	return hashes, nil
}

// bundle checks one bundle directory; it returns its manifest, its manifest's bytes and
// its checkpoint (nil when they could not be read or verified: reported).
func (c *checker) bundle(dir string) (*manifest, []byte, *checkpoint) {
	name := filepath.Base(dir)
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		c.fail("%s: manifest.json: %v", name, err)
		return nil, nil, nil
	}
	sig, err := os.ReadFile(filepath.Join(dir, "manifest.sig"))
	if err != nil || !ed25519.Verify(c.pub, raw, sig) {
		c.fail("%s: manifest.sig: not an Ed25519 signature of manifest.json by the key", name)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		c.fail("%s: manifest.json: %v", name, err)
		return nil, nil, nil
	}
	if m.VerifierKey != c.vkey {
		c.fail("%s: manifest verifier_key %q is not the key's (note.NewEd25519VerifierKey) %q",
			name, m.VerifierKey, c.vkey)
	}
	cp, err := c.openCheckpoint(m.Checkpoint)
	if err != nil {
		c.fail("%s: checkpoint: %v", name, err)
		return &m, raw, nil
	}
	if c.note == nil {
		c.note, _ = c.open(m.Checkpoint) // the first bundle's: BUNDLE's (read before OLD)
	}
	leaves := map[uint64]string{} // leaf index -> the file and line that hold it
	for _, part := range []struct {
		file    string
		entries []entry
	}{{"findings.jsonl", m.Findings}, {"amendments.jsonl", m.Amendments},
		{"reviews.jsonl", m.Reviews}, {"exceptions.jsonl", m.Exceptions}} {
		c.inclusion(name, filepath.Join(dir, part.file), part.file, part.entries, cp, leaves)
	}
	c.attestation(name, dir, &m, cp)
	if m.Previous != nil {
		prev, err := c.openCheckpoint(m.Previous.Checkpoint)
		if err != nil {
			c.fail("%s: previous checkpoint: %v", name, err)
			return &m, raw, cp
		}
		hashes, err := decodeHashes(m.Previous.ConsistencyProof)
		if err == nil {
			err = proof.VerifyConsistency(rfc6962.DefaultHasher, prev.size, cp.size, hashes,
				prev.root, cp.root)
		}
		if err != nil {
			c.fail("%s: previous: consistency proof from size %d to %d: %v", name, prev.size,
				cp.size, err)
		} else {
			c.proofs++
		}
	}
	return &m, raw, cp
}

// ownID is the id field of each entry file's records; foreignIDs, the id fields of other
// kinds of ledger entry its records never hold (a leaf carries no kind: a review holds
// the finding_id of the finding it reviews, an amendment that of the finding it amends).
var ownID = map[string]string{"findings.jsonl": "finding_id", "amendments.jsonl": "amendment_id",
	"reviews.jsonl": "review_id", "exceptions.jsonl": "exception_id"}
var foreignIDs = map[string][]string{
	"findings.jsonl":   {"amendment_id", "review_id", "exception_id", "export_id"},
	"amendments.jsonl": {"review_id", "exception_id", "export_id"},
}

// entryShape checks that a line is a record of its file's kind holding the listed id, that
// no other line of the bundle is the same leaf, and that the file is in ledger order.
func (c *checker) entryShape(bundle, file string, line int, raw []byte, e entry, last *int64,
	leaves map[uint64]string) {
	where := fmt.Sprintf("%s line %d", file, line)
	var record map[string]json.RawMessage
	var id string
	if json.Unmarshal(raw, &record) != nil {
		c.fail("%s: %s: not a JSON object", bundle, where)
	} else if held, ok := record[ownID[file]]; !ok || json.Unmarshal(held, &id) != nil ||
		id != e.ID {
		c.fail("%s: %s: does not hold the %s the manifest lists", bundle, where, ownID[file])
	}
	for _, field := range foreignIDs[file] {
		if _, ok := record[field]; ok {
			c.fail("%s: %s: holds %s, the id of another kind of ledger entry", bundle, where,
				field)
		}
	}
	if other, ok := leaves[e.LeafIndex]; ok {
		c.fail("%s: %s: is ledger leaf %d, which %s is too", bundle, where, e.LeafIndex, other)
	} else {
		leaves[e.LeafIndex] = where
	}
	if int64(e.LeafIndex) <= *last {
		c.fail("%s: %s: is ledger leaf %d, before leaf %d above it (not in ledger order)",
			bundle, where, e.LeafIndex, *last)
	} else {
		*last = int64(e.LeafIndex)
	}
}

func (c *checker) inclusion(bundle, path, file string, entries []entry, cp *checkpoint,
	leaves map[uint64]string) {
	data, err := os.ReadFile(path)
	if err != nil {
		if len(entries) > 0 || !errors.Is(err, os.ErrNotExist) {
			c.fail("%s: %s: %v", bundle, file, err)
		}
		return
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if len(lines) != len(entries) {
		c.fail("%s: %s: %d lines, the manifest lists %d", bundle, file, len(lines), len(entries))
		return
	}
	last := int64(-1)
	for i, e := range entries {
		c.entryShape(bundle, file, i+1, lines[i], e, &last, leaves)
		leafHash := rfc6962.DefaultHasher.HashLeaf(lines[i])
		if hex.EncodeToString(leafHash) != e.LeafHash {
			c.fail("%s: %s line %d: leaf hash is not the manifest's", bundle, file, i+1)
		}
		hashes, err := decodeHashes(e.InclusionProof)
		if err == nil {
			err = proof.VerifyInclusion(rfc6962.DefaultHasher, e.LeafIndex, cp.size, leafHash,
				hashes, cp.root)
		}
		if err != nil {
			c.fail("%s: %s line %d: inclusion proof at leaf %d of %d: %v", bundle, file, i+1,
				e.LeafIndex, cp.size, err)
		} else {
			c.proofs++
		}
	}
}

// bundleFiles maps each regular file of the bundle directory (slash-separated path) but
// the attestation to its hex SHA-256.
func bundleFiles(dir string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == attestationFile {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		digest := sha256.Sum256(data)
		files[filepath.ToSlash(rel)] = hex.EncodeToString(digest[:])
		return nil
	})
	return files, err
}

// attestation checks the bundle's in-toto attestation with the reference libraries.
func (c *checker) attestation(name, dir string, m *manifest, cp *checkpoint) {
	where := name + ": " + attestationFile
	raw, err := os.ReadFile(filepath.Join(dir, attestationFile))
	if errors.Is(err, os.ErrNotExist) {
		version, _ := strconv.Atoi(strings.TrimPrefix(m.Format, formatPrefix))
		if version >= firstAttestedVersion {
			c.fail("%s: missing (format %s requires it)", where, m.Format)
		}
		return
	}
	if err != nil {
		c.fail("%s: %v", where, err)
		return
	}
	line, rest, found := bytes.Cut(raw, []byte("\n"))
	if !found || len(rest) != 0 {
		c.fail("%s: not one DSSE envelope on one line", where)
		return
	}
	var envelope dsse.Envelope
	if err := json.Unmarshal(line, &envelope); err != nil {
		c.fail("%s: not a DSSE envelope: %v", where, err)
		return
	}
	if envelope.PayloadType != inTotoPayloadType {
		c.fail("%s: payloadType %q is not %q", where, envelope.PayloadType, inTotoPayloadType)
		return
	}
	verifier, err := dsse.NewEnvelopeVerifier(c.dsse)
	if err == nil {
		_, err = verifier.Verify(context.Background(), &envelope)
	}
	if err != nil {
		c.fail("%s: dsse: EnvelopeVerifier.Verify: %v", where, err)
		return
	}
	payload, err := envelope.DecodeB64Payload()
	var statement intoto.Statement
	if err == nil {
		err = protojson.Unmarshal(payload, &statement)
	}
	if err == nil {
		err = statement.Validate()
	}
	if err != nil {
		c.fail("%s: not an in-toto Statement v1: %v", where, err)
		return
	}
	if statement.GetPredicateType() != exportPredicateType {
		c.fail("%s: predicateType %q is not %q", where, statement.GetPredicateType(),
			exportPredicateType)
	}
	c.subjects(where, dir, statement.GetSubject())
	if cp != nil {
		c.predicate(where, statement.GetPredicate().AsMap(), m, cp)
	}
	c.attested = append(c.attested, fmt.Sprintf("%s (%d subjects)", name,
		len(statement.GetSubject())))
}

// subjects checks that the statement's subjects are exactly the bundle's files and their
// SHA-256 digests.
func (c *checker) subjects(where, dir string, subjects []*intoto.ResourceDescriptor) {
	files, err := bundleFiles(dir)
	if err != nil {
		c.fail("%s: listing the bundle: %v", where, err)
		return
	}
	named := map[string]bool{}
	for _, subject := range subjects {
		want, ok := files[subject.GetName()]
		switch {
		case named[subject.GetName()]:
			c.fail("%s: subject %q given twice", where, subject.GetName())
		case !ok:
			c.fail("%s: subject %q is not a file of the bundle", where, subject.GetName())
		case subject.GetDigest()["sha256"] != want:
			c.fail("%s: subject %q: its sha256 is not the file's", where, subject.GetName())
		}
		named[subject.GetName()] = true
	}
	missing := []string{}
	for file := range files {
		if !named[file] {
			missing = append(missing, file)
		}
	}
	sort.Strings(missing)
	for _, file := range missing {
		c.fail("%s: %s is not a subject of the statement", where, file)
	}
}

// predicate checks the statement's predicate against the manifest and its checkpoint
// (opened with note.Open).
func (c *checker) predicate(where string, got map[string]any, m *manifest, cp *checkpoint) {
	counts := map[string]any{"findings": float64(len(m.Findings)),
		"amendments": float64(len(m.Amendments)), "reviews": float64(len(m.Reviews)),
		"exceptions": float64(len(m.Exceptions))}
	want := map[string]any{
		"format":     m.Format,
		"created_at": m.CreatedAt,
		"purpose":    m.Purpose,
		"query":      map[string]any{"window": m.Window, "filters": m.Filters},
		"checkpoint": map[string]any{"note": m.Checkpoint, "origin": cp.origin,
			"size": float64(cp.size), "root": hex.EncodeToString(cp.root)},
		"counts": counts,
	}
	keys := []string{}
	for key := range want {
		keys = append(keys, key)
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !reflect.DeepEqual(got[key], want[key]) {
			c.fail("%s: predicate %s is not the manifest's", where, key)
		}
	}
}

// since checks that OLD's checkpoint is consistent with NEW's.
func (c *checker) since(oldCp *checkpoint, newM *manifest, newCp *checkpoint, proofPath string) {
	if oldCp.origin != newCp.origin {
		c.fail("consistency: checkpoints of different logs (%q, %q)", oldCp.origin, newCp.origin)
		return
	}
	var hexes []string
	switch {
	case proofPath != "":
		raw, err := os.ReadFile(proofPath)
		var p proofFile
		if err == nil {
			err = json.Unmarshal(raw, &p)
		}
		if err != nil || p.Format != "consentwatch-consistency-proof/1" {
			c.fail("consistency: %s is not a consistency proof file (%v)", proofPath, err)
			return
		}
		if p.OldSize != oldCp.size || p.NewSize != newCp.size {
			c.fail("consistency: the proof file is for sizes %d to %d, not %d to %d",
				p.OldSize, p.NewSize, oldCp.size, newCp.size)
			return
		}
		hexes = p.ConsistencyProof
	case newM.Previous != nil:
		prev, err := c.openCheckpoint(newM.Previous.Checkpoint)
		if err != nil {
			c.fail("consistency: NEW's previous checkpoint: %v", err)
			return
		}
		if prev.size != oldCp.size || !bytes.Equal(prev.root, oldCp.root) {
			c.fail("consistency: NEW's previous checkpoint (size %d) is not OLD's (size %d): "+
				"give -proof", prev.size, oldCp.size)
			return
		}
		hexes = newM.Previous.ConsistencyProof
	default:
		c.fail("consistency: NEW carries no consistency proof: give -proof")
		return
	}
	hashes, err := decodeHashes(hexes)
	if err == nil {
		err = proof.VerifyConsistency(rfc6962.DefaultHasher, oldCp.size, newCp.size, hashes,
			oldCp.root, newCp.root)
	}
	if err != nil {
		c.fail("consistency: OLD (size %d) to NEW (size %d): %v", oldCp.size, newCp.size, err)
		return
	}
	c.proofs++
}

func loadKey(path, name string) (*checker, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("not a PEM file")
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 public key")
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, err
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	// No key id of our own: the envelope's keyid must then be the one dsse.SHA256KeyID
	// derives from the key (its OpenSSH SHA256 fingerprint), as for cosign's verifiers.
	sv, err := signerverifier.NewED25519SignerVerifierFromSSLibKey(&signerverifier.SSLibKey{
		KeyType: signerverifier.ED25519KeyType, Scheme: signerverifier.ED25519KeyType,
		KeyVal: signerverifier.KeyVal{Public: hex.EncodeToString(pub)}})
	if err != nil {
		return nil, err
	}
	return &checker{pub: pub, vkey: vkey, verifier: verifier, dsse: sv}, nil
}

func main() {
	pubPath := flag.String("pub", "", "the ledger's Ed25519 public key (PEM)")
	name := flag.String("name", "consentwatch", "the signed-note key name")
	sinceDir := flag.String("since", "", "an earlier bundle directory of the same ledger")
	proofPath := flag.String("proof", "", "with -since: a consistency proof file")
	var witnessPaths witnessFlags
	flag.Var(&witnessPaths, "witness", "a witness's verifier key file (repeatable)")
	required := flag.Int("require-witnesses", -1, "how many witnesses must have cosigned "+
		"(default: all given)")
	flag.Parse()
	if *required < 0 {
		*required = len(witnessPaths)
	}
	if *pubPath == "" || flag.NArg() != 1 || (*proofPath != "" && *sinceDir == "") ||
		*required > len(witnessPaths) {
		fmt.Fprintln(os.Stderr, "usage: refcheck -pub KEY.pub [-since OLD [-proof FILE]] "+
			"[-witness VKEY ... [-require-witnesses N]] BUNDLE")
		os.Exit(2)
	}
	c, err := loadKey(*pubPath, *name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refcheck: %s: %v\n", *pubPath, err)
		os.Exit(2)
	}
	var witnesses []*witness
	for _, path := range witnessPaths {
		raw, err := os.ReadFile(path)
		var w *witness
		if err == nil {
			w, err = parseWitness(string(raw))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "refcheck: %s: %v\n", path, err)
			os.Exit(2)
		}
		witnesses = append(witnesses, w)
	}
	newM, _, newCp := c.bundle(flag.Arg(0))
	var signed []string
	if len(witnesses) > 0 && c.note != nil {
		signed = c.cosigned(witnesses)
		if len(signed) < *required {
			c.fail("witnesses: %d valid cosignatures (%s), %d required", len(signed),
				strings.Join(signed, ", "), *required)
		}
	}
	if *sinceDir != "" {
		_, _, oldCp := c.bundle(*sinceDir)
		if oldCp != nil && newCp != nil {
			c.since(oldCp, newM, newCp, *proofPath)
		}
	}
	for _, failure := range c.failures {
		fmt.Println("FAIL " + failure)
	}
	if len(c.failures) > 0 {
		os.Exit(1)
	}
	fmt.Printf("OK: checkpoint of size %d opened with %s; %d proofs verified\n", newCp.size,
		c.vkey, c.proofs)
	if len(witnesses) > 0 {
		fmt.Printf("OK: cosigned (cosignature/v1) by %d of %d witnesses: %s\n", len(signed),
			len(witnesses), strings.Join(signed, ", "))
	}
	for _, attested := range c.attested {
		fmt.Printf("OK: %s: DSSE envelope and in-toto Statement v1 verified: %s\n",
			attestationFile, attested)
	}
}
