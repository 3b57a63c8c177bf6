package disktest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.log", "xx ada@example.com yy")
	write("sub/b.sst", "ada@example.com and bob")
	write("c", "nothing here")
	got, err := FindStrings(dir, "ada@example.com", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"ada@example.com": {"a.log", filepath.Join("sub", "b.sst")},
		"bob":             {filepath.Join("sub", "b.sst")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFindMissingDir(t *testing.T) {
	if _, err := Find(filepath.Join(t.TempDir(), "absent"), []byte("x")); err == nil {
		t.Fatal("a missing directory is not an error: a scan of nothing would pass every absence check")
	}
}

// TestFindVanishedFile: a file listed but gone when read (here a dangling
// link, which reads as "not exist" the same way a WAL deleted by Pebble
// between the listing and the read does) is skipped, not an error.
func TestFindVanishedFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(dir, "deleted.log"), filepath.Join(dir, "000011.log")); err != nil {
		t.Skip("no symlinks here:", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "000012.sst"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FindStrings(dir, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if len(got["kept"]) != 1 {
		t.Fatalf("got %v", got)
	}
}
