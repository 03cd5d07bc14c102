package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/mlmodel"
)

const mlmodelText = `flavors:
  xgboost:
    data: model.json
    model_format: json
signature:
  inputs: '[{"type": "double", "name": "a"}]'
`

type entry struct {
	name, body string
	typ        byte
	link       string
}

func tgz(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: typ, Linkname: e.link}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	zw.Close()
	return &buf
}

func validModel() []entry {
	return []entry{{name: "MLmodel", body: mlmodelText}, {name: "model.json", body: "{}"}}
}

func code(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestUploadNumbersVersions(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		mv, err := r.Upload("cat.schema.fraud", tgz(t, validModel()...))
		if err != nil {
			t.Fatal(err)
		}
		if mv.Version != string(rune('0'+want)) {
			t.Errorf("version = %s, want %d", mv.Version, want)
		}
	}
	mv, err := r.Get("cat.schema.fraud", "2")
	if err != nil {
		t.Fatal(err)
	}
	if len(mv.Flavors) != 1 || mv.Flavors[0] != "xgboost" || mv.Signature.Inputs[0].Name != "a" || mv.SizeBytes == 0 {
		t.Errorf("metadata = %+v", mv)
	}
	dir, err := r.ModelDir("cat.schema.fraud", "1")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "model.json")); err != nil || string(b) != "{}" {
		t.Errorf("model.json = %q, %v", b, err)
	}
	all, err := r.List()
	if err != nil || len(all) != 2 {
		t.Errorf("List = %v, %v", all, err)
	}
	if _, err := r.Get("cat.schema.fraud", "3"); code(err) != api.ErrResourceDoesNotExist {
		t.Errorf("Get(3) err = %v, want RESOURCE_DOES_NOT_EXIST", err)
	}
}

func TestUploadUnwrapsOneTopFolder(t *testing.T) {
	r, _ := Open(t.TempDir())
	_, err := r.Upload("m", tgz(t,
		entry{name: "my-model/", typ: tar.TypeDir},
		entry{name: "my-model/MLmodel", body: mlmodelText},
		entry{name: "my-model/model.json", body: "{}"}))
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := r.ModelDir("m", "1")
	if _, err := os.Stat(filepath.Join(dir, "MLmodel")); err != nil {
		t.Errorf("MLmodel not at the top of the stored model: %v", err)
	}
}

func TestUploadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		body *bytes.Buffer
		code string
	}{
		{"traversal", tgz(t, append(validModel(), entry{name: "../evil", body: "x"})...), api.ErrInvalidParameterValue},
		{"absolute", tgz(t, append(validModel(), entry{name: "/etc/evil", body: "x"})...), api.ErrInvalidParameterValue},
		{"symlink", tgz(t, append(validModel(), entry{name: "link", typ: tar.TypeSymlink, link: "/etc/passwd"})...), api.ErrInvalidParameterValue},
		{"no MLmodel", tgz(t, entry{name: "model.json", body: "{}"}), api.ErrInvalidParameterValue},
		{"bad MLmodel", tgz(t, entry{name: "MLmodel", body: "flavors: ["}), api.ErrInvalidParameterValue},
		{"missing data", tgz(t, entry{name: "MLmodel", body: mlmodelText}), api.ErrInvalidParameterValue},
		{"duplicate entry", tgz(t, append(validModel(), entry{name: "model.json", body: "{}"})...), api.ErrInvalidParameterValue},
		{"not gzip", bytes.NewBufferString("hello"), api.ErrInvalidParameterValue},
		{"empty", &bytes.Buffer{}, api.ErrInvalidParameterValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, _ := Open(dir)
			_, err := r.Upload("m", tc.body)
			if code(err) != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
			assertEmpty(t, dir)
		})
	}
}

func TestUploadLimits(t *testing.T) {
	dir := t.TempDir()
	r, _ := Open(dir)
	r.MaxUploadSize = 64
	if _, err := r.Upload("m", tgz(t, validModel()...)); code(err) != api.ErrPayloadTooLarge {
		t.Errorf("over upload limit: err = %v, want PAYLOAD_TOO_LARGE", err)
	}
	r.MaxUploadSize = 0
	r.MaxExtractedSize = 10
	if _, err := r.Upload("m", tgz(t, validModel()...)); code(err) != api.ErrPayloadTooLarge {
		t.Errorf("over extracted limit: err = %v, want PAYLOAD_TOO_LARGE", err)
	}
	assertEmpty(t, dir)
	if _, err := r.Upload("../x", tgz(t, validModel()...)); code(err) != api.ErrInvalidParameterValue {
		t.Errorf("bad name: err = %v", err)
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, tmpPrefix+"123", "model"), 0o755)
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, dir)
}

func TestTarGzRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "MLmodel"), []byte(mlmodelText), 0o644)
	os.WriteFile(filepath.Join(src, "model.json"), []byte("{}"), 0o644)
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "x.txt"), []byte("x"), 0o644)
	var buf bytes.Buffer
	if err := TarGz(&buf, src); err != nil {
		t.Fatal(err)
	}
	r, _ := Open(t.TempDir())
	if _, err := r.Upload("m", &buf); err != nil {
		t.Fatal(err)
	}
	dir, _ := r.ModelDir("m", "1")
	if b, _ := os.ReadFile(filepath.Join(dir, "sub", "x.txt")); string(b) != "x" {
		t.Errorf("sub/x.txt = %q", b)
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		t.Errorf("left behind: %s", e.Name())
	}
}

// TestUploadErrorsHideServerPaths: no refusal names the registry's
// directory or its .upload-* temporary one (issue 19: the path in the
// answer told an attacker where their upload's files lay).
func TestUploadErrorsHideServerPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		body *bytes.Buffer
		want string
	}{
		{"duplicate entry", tgz(t, append(validModel(), entry{name: "model.json", body: "{}"})...), `"model.json" twice`},
		{"MLmodel is a folder", tgz(t, entry{name: "MLmodel/", typ: tar.TypeDir}, entry{name: "MLmodel/x", body: "x"}), "MLmodel"},
		{"file under a file", tgz(t, append(validModel(), entry{name: "model.json/x", body: "x"})...), "model.json/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, _ := Open(dir)
			_, err := r.Upload("m", tc.body)
			if err == nil || strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), tmpPrefix) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v; want one naming %q and no server path", err, tc.want)
			}
		})
	}
	// A relative registry directory is a server path too.
	t.Chdir(t.TempDir())
	r, err := Open("models")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Upload("m", tgz(t, append(validModel(), entry{name: "model.json", body: "{}"})...))
	if err == nil || strings.Contains(err.Error(), "models/") || strings.Contains(err.Error(), tmpPrefix) {
		t.Errorf("relative registry: err = %v; want no server path", err)
	}
}

// TestUploadHugeMLmodel: a 1 MB tar.gz holding a 1 GiB MLmodel took 40 s
// and 6 GiB (issue 19). The header's size is refused before a byte of the
// file is read, so the archive here claims 1 GiB and holds 64 KiB.
func TestUploadHugeMLmodel(t *testing.T) {
	for _, name := range []string{"MLmodel", "top/MLmodel", "conda.yaml", "requirements.txt"} {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 1 << 30, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(make([]byte, 64<<10)) // truncated: never closed
		zw.Close()
		dir := t.TempDir()
		r, _ := Open(dir)
		start := time.Now()
		_, err := r.Upload("m", &buf)
		if code(err) != api.ErrInvalidParameterValue || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "at most") {
			t.Errorf("%s of 1 GiB: err = %v; want a 400 naming it and the cap", name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s of 1 GiB: refused after %v", name, d)
		}
		assertEmpty(t, dir)
	}
	// An MLmodel at the cap passes extract; the parser sees it (and
	// refuses its content, not its size).
	_, err := func() (*api.ModelVersion, error) {
		r, _ := Open(t.TempDir())
		return r.Upload("m", tgz(t, entry{name: "MLmodel", body: "flavors: {}\n#" + strings.Repeat("x", mlmodel.MaxFileSize-15)}))
	}()
	if err == nil || strings.Contains(err.Error(), "at most") {
		t.Errorf("MLmodel at the cap: err = %v; want the parser's refusal", err)
	}
}

// TestUploadCountsFolders: 300,000 folders came from a 1.5 MB upload
// (issue 19): folders count against MaxFiles, listed or implied by a
// file's path.
func TestUploadCountsFolders(t *testing.T) {
	dirs := validModel()
	for i := range 20 {
		dirs = append(dirs, entry{name: fmt.Sprintf("d%d/", i), typ: tar.TypeDir})
	}
	deep := append(validModel(), entry{name: strings.Repeat("a/", 20) + "f", body: "x"})
	for name, body := range map[string]*bytes.Buffer{"listed": tgz(t, dirs...), "implied": tgz(t, deep...)} {
		dir := t.TempDir()
		r, _ := Open(dir)
		r.MaxFiles = 10
		if _, err := r.Upload("m", body); code(err) != api.ErrInvalidParameterValue || !strings.Contains(err.Error(), "files and folders") {
			t.Errorf("%s folders: err = %v; want the file limit", name, err)
		}
		assertEmpty(t, dir)
	}
	// The limit still lets a normal model with folders through.
	r, _ := Open(t.TempDir())
	r.MaxFiles = 10
	if _, err := r.Upload("m", tgz(t, entry{name: "m/", typ: tar.TypeDir}, entry{name: "m/MLmodel", body: mlmodelText},
		entry{name: "m/model.json", body: "{}"}, entry{name: "m/extra/a", body: "x"})); err != nil {
		t.Errorf("a model with two folders: %v", err)
	}
}

// A deleted version is gone, its bytes are freed, and its number is never
// given again: a config that names it must not serve another model.
func TestDeleteNeverReusesTheNumber(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.Upload("m", tgz(t, validModel()...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Delete("m", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("m", "2"); code(err) != api.ErrResourceDoesNotExist {
		t.Errorf("Get after Delete: %v, want RESOURCE_DOES_NOT_EXIST", err)
	}
	if err := r.Delete("m", "2"); code(err) != api.ErrResourceDoesNotExist {
		t.Errorf("second Delete: %v, want RESOURCE_DOES_NOT_EXIST", err)
	}
	mv, err := r.Upload("m", tgz(t, validModel()...))
	if err != nil || mv.Version != "3" {
		t.Fatalf("upload after deleting version 2 = %+v, %v; want version 3", mv, err)
	}
	// A new Registry over the same folder (a restart) numbers on too.
	r2, _ := Open(r.dir)
	if err := r2.Delete("m", "3"); err != nil {
		t.Fatal(err)
	}
	if mv, err := r2.Upload("m", tgz(t, validModel()...)); err != nil || mv.Version != "4" {
		t.Fatalf("upload after a restart = %+v, %v; want version 4", mv, err)
	}
}

// The registry refuses an upload that would take it over MaxStorage, and
// a delete makes room again.
func TestStorageQuota(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Upload("m", tgz(t, validModel()...)); err != nil {
		t.Fatal(err)
	}
	one, err := diskUsage(filepath.Join(r.dir, "m", "1"))
	if err != nil || one == 0 {
		t.Fatal(one, err)
	}
	r.MaxStorage = one + one/2 // room for one version, not two
	_, err = r.Upload("m", tgz(t, validModel()...))
	if code(err) != api.ErrInvalidParameterValue || !strings.Contains(err.Error(), "--max-model-storage") {
		t.Fatalf("upload over the quota: %v; want a 400 naming --max-model-storage", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(r.dir, tmpPrefix+"*")); len(leftovers) != 0 {
		t.Errorf("the refused upload left %v", leftovers)
	}
	if err := r.Delete("m", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Upload("m", tgz(t, validModel()...)); err != nil {
		t.Errorf("upload after a delete made room: %v", err)
	}
}

// A feature spec attached to a version is kept in its meta.json, read back
// by Get and List, and detached with ""; the rest of the version stays.
func TestSetFeatureSpec(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	up, err := r.Upload("m", tgz(t, validModel()...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetFeatureSpec("m", "1", "user_features"); err != nil {
		t.Fatal(err)
	}
	// A registry opened again reads it from disk.
	if r, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	mv, err := r.Get("m", "1")
	if err != nil || mv.FeatureSpec != "user_features" || mv.CreationTimestamp != up.CreationTimestamp || mv.SizeBytes != up.SizeBytes {
		t.Fatalf("Get: %+v %v", mv, err)
	}
	if all, err := r.List(); err != nil || len(all) != 1 || all[0].FeatureSpec != "user_features" {
		t.Errorf("List: %+v %v", all, err)
	}
	if mv, err := r.SetFeatureSpec("m", "1", ""); err != nil || mv.FeatureSpec != "" {
		t.Errorf("detach: %+v %v", mv, err)
	}
	if mv, _ := r.Get("m", "1"); mv.FeatureSpec != "" {
		t.Errorf("after detach: %+v", mv)
	}
	if _, err := r.SetFeatureSpec("m", "2", "s"); code(err) != api.ErrResourceDoesNotExist {
		t.Errorf("a missing version: %v", err)
	}
}
