// verify.go checks reasoning-trace output with Go's own golang.org/x/mod/sumdb/note and tlog:
// a third-party verifier that knows nothing of this project. Input on stdin (JSON):
//
//	{"vkey": "...", "note": "...", "line": "<base64 record line>", "inclusion": {...},
//	 "old_note": "...", "consistency": {...}}
//
// It prints "ok" and exits 0, or prints the error and exits 1.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	Vkey      string `json:"vkey"`
	Note      string `json:"note"`
	Line      string `json:"line"`
	Inclusion struct {
		Seq      int64    `json:"seq"`
		TreeSize int64    `json:"tree_size"`
		Proof    []string `json:"proof"`
	} `json:"inclusion"`
	OldNote     string `json:"old_note"`
	Consistency struct {
		OldSize int64    `json:"old_size"`
		NewSize int64    `json:"new_size"`
		Proof   []string `json:"proof"`
	} `json:"consistency"`
}

func checkpoint(text, vkey string) (int64, tlog.Hash, error) {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return 0, tlog.Hash{}, fmt.Errorf("short checkpoint body")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != 32 {
		return 0, tlog.Hash{}, fmt.Errorf("bad root")
	}
	var root tlog.Hash
	copy(root[:], raw)
	return size, root, nil
}

func hashes(in []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(in))
	for i, s := range in {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("bad proof hash %d", i)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

func run() error {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		return err
	}
	size, root, err := checkpoint(in.Note, in.Vkey)
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	line, err := base64.StdEncoding.DecodeString(in.Line)
	if err != nil {
		return err
	}
	proof, err := hashes(in.Inclusion.Proof)
	if err != nil {
		return err
	}
	if in.Inclusion.TreeSize != size {
		return fmt.Errorf("proof for size %d, checkpoint of %d", in.Inclusion.TreeSize, size)
	}
	if err := tlog.CheckRecord(proof, size, root, in.Inclusion.Seq, tlog.RecordHash(line)); err != nil {
		return fmt.Errorf("inclusion: %v", err)
	}
	if in.OldNote != "" {
		oldSize, oldRoot, err := checkpoint(in.OldNote, in.Vkey)
		if err != nil {
			return fmt.Errorf("old checkpoint: %v", err)
		}
		tp, err := hashes(in.Consistency.Proof)
		if err != nil {
			return err
		}
		if err := tlog.CheckTree(tp, size, root, oldSize, oldRoot); err != nil {
			return fmt.Errorf("consistency: %v", err)
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
