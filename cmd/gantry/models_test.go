package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// gantry models delete removes a version from the registry; its number is
// not given again, and deleting it twice says it does not exist.
func TestModelsDeleteCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs gantry dev; run without -short")
	}
	bin, addr := buildGantry(t), freeAddr(t)
	startDev(t, bin, addr, t.TempDir())
	for range 2 {
		mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	}
	if out := mustCLI(t, bin, addr, "models", "delete", "binary", "2"); !strings.Contains(out, "deleted binary version 2") {
		t.Errorf("delete: %s", out)
	}
	if out, err := cli(t, bin, addr, "models", "delete", "binary", "2"); err == nil || !strings.Contains(out, "does not exist") {
		t.Errorf("second delete: %v %s; want an error saying it does not exist", err, out)
	}
	if out := mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary")); !strings.Contains(out, "version 3") {
		t.Errorf("upload after a delete: %s; want version 3", out)
	}
	var versions []string
	for _, line := range strings.Split(mustCLI(t, bin, addr, "models", "list"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "binary" {
			versions = append(versions, f[1])
		}
	}
	if strings.Join(versions, ",") != "1,3" {
		t.Errorf("versions listed after the delete = %v, want [1 3]", versions)
	}
}
