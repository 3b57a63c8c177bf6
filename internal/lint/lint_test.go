// Package lint holds repository-wide checks that keep the package map of
// ../shared/STYLE.md and README.md true: ingest, identity and segments never import each other,
// nothing imports cmd/, and the decoder's hot path uses no encoding/json.
// Test files count too.
package lint

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cdpstream/cdpstream"

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// area returns the top-level folder of a package of this module.
func area(path string) string {
	rest := strings.TrimPrefix(path, module+"/")
	if rest == path {
		return ""
	}
	return strings.SplitN(rest, "/", 2)[0]
}

func TestImportRules(t *testing.T) {
	// The stages and the privacy orchestration see each other only
	// through interfaces that cmd/ adapts.
	independent := map[string]bool{"ingest": true, "identity": true, "segments": true, "privacy": true}
	for _, p := range listPackages(t) {
		from := area(p.ImportPath)
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			to := area(imp)
			if to == "cmd" {
				t.Errorf("%s imports %s: nothing may import cmd/", p.ImportPath, imp)
			}
			if independent[from] && independent[to] && from != to {
				t.Errorf("%s imports %s: ingest, identity, segments and privacy must not import each other", p.ImportPath, imp)
			}
			if from == "engine" && (independent[to] || to == "bench") {
				t.Errorf("%s imports %s: engine is the base every package builds on", p.ImportPath, imp)
			}
		}
	}
}

// TestHotPathImports keeps reflection-based JSON out of the packages that
// touch every event.
func TestHotPathImports(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/ingest" {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "encoding/json" || imp == "reflect" {
				t.Errorf("%s imports %s on the per-event path; use fastjson", p.ImportPath, imp)
			}
		}
	}
}
