// Package disktest reads every file of a data directory looking for byte
// strings: the check behind each "nothing of the erased person is left on
// disk" test.
package disktest

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Find returns, for each needle found in a file under dir, the paths of
// those files relative to dir. Needles found nowhere are absent from the
// map. A file or directory removed between listing and reading is skipped:
// Pebble deletes obsolete WALs and tables in the background, and a file
// that is gone holds nothing.
func Find(dir string, needles ...[]byte) (map[string][]string, error) {
	found := map[string][]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != dir {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		for _, n := range needles {
			if bytes.Contains(b, n) {
				found[string(n)] = append(found[string(n)], rel)
			}
		}
		return nil
	})
	return found, err
}

// FindStrings is Find with string needles.
func FindStrings(dir string, needles ...string) (map[string][]string, error) {
	bs := make([][]byte, len(needles))
	for i, n := range needles {
		bs[i] = []byte(n)
	}
	return Find(dir, bs...)
}
