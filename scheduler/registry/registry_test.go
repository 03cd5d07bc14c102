package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gantry/gantry/api"
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
