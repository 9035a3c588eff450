// noteverdict.go answers, for each signed checkpoint it is given, what Go's own
// golang.org/x/mod/sumdb/note and tlog make of it: the reference verdict that
// tests/test_note_differential.py compares reasoning-trace's parser with.
//
// Input: one JSON object a line, {"vkey": "<verifier key>", "note": "<base64 of the note bytes>"}.
// Output: one line each, "accept <size> <base64 root>" or "reject <error>".
//
// tlog.ParseTree only reads the sumdb's own origin line, so the note's first line must be the
// key's name (as a checkpoint's origin is), and it is swapped for "go.sum database tree" before
// ParseTree reads the body. The test's key name has that line's length, so ParseTree's
// size limit sees the same number of bytes.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Vkey string `json:"vkey"`
	Note string `json:"note"`
}

func verdict(r request) string {
	v, err := note.NewVerifier(r.Vkey)
	if err != nil {
		return "error vkey: " + err.Error()
	}
	msg, err := base64.StdEncoding.DecodeString(r.Note)
	if err != nil {
		return "error input: " + err.Error()
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return "reject " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	prefix := v.Name() + "\n"
	if !strings.HasPrefix(n.Text, prefix) {
		return "reject origin is not the key's name"
	}
	tree, err := tlog.ParseTree([]byte("go.sum database tree\n" + n.Text[len(prefix):]))
	if err != nil {
		return "reject " + err.Error()
	}
	return fmt.Sprintf("accept %d %s", tree.N, base64.StdEncoding.EncodeToString(tree.Hash[:]))
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			fmt.Fprintf(out, "error input: %v\n", err)
		} else {
			fmt.Fprintln(out, verdict(r))
		}
		out.Flush()
	}
}
