// Package registry stores uploaded MLflow model directories as numbered
// versions under a data directory:
//
//	<dir>/<name>/<version>/model/          the extracted MLflow model
//	<dir>/<name>/<version>/artifact.tar.gz the upload, served to workers
//	<dir>/<name>/<version>/meta.json       api.ModelVersion
//
// An upload is written and checked in a temporary directory and renamed into
// place only when it is whole, so a crash or a bad upload leaves nothing half
// written behind.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/mlmodel"
	"github.com/gantry/gantry/worker/openaiserver/flavor"
)

// Defaults for Registry's limits.
const (
	DefaultMaxUploadSize    = 1 << 30 // 1 GiB compressed
	DefaultMaxExtractedSize = 4 << 30 // 4 GiB uncompressed
	DefaultMaxFiles         = 10000
	// DefaultMaxStorage bounds the bytes on disk of every stored version
	// together, compressed and extracted: a registry is not a place to
	// grow without bound, and a full disk stops the store and the workers
	// with it.
	DefaultMaxStorage = 100 << 30
)

const (
	modelDir     = "model"
	artifactFile = "artifact.tar.gz"
	metaFile     = "meta.json"
	tmpPrefix    = ".upload-"
	// highestFile, in a model's folder, holds the highest version ever
	// stored, so that a deleted version's number is never given again: a
	// config that names it must not start serving another model.
	highestFile = ".highest"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

// Registry is a directory of model versions. It is safe for concurrent use.
type Registry struct {
	dir string
	abs string // dir made absolute, for scrub
	// Limits; zero means the Default* value.
	MaxUploadSize    int64
	MaxExtractedSize int64
	MaxFiles         int
	MaxStorage       int64

	// mu serializes version numbering, so that two uploads of one model
	// never take the same number, and guards used.
	mu sync.Mutex
	// used is the bytes of the stored versions, measured on first need
	// (-1 until then) and kept up to date by uploads and deletes.
	used int64
	now  func() time.Time

	// signatures caches versions' metadata (*api.ModelVersion) for
	// Signature, Task and Flavors, by "name\x00version".
	signatures sync.Map
}

// Open opens the registry at dir, creating it if needed, and removes the
// leftovers of uploads that a crash interrupted.
func Open(dir string) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	for _, p := range leftovers {
		os.RemoveAll(p)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return &Registry{dir: dir, abs: abs, now: time.Now, used: -1}, nil
}

// ValidName reports whether name can name a model.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Upload stores a tar.gz of an MLflow model directory as the next version of
// name. Problems with the upload are *api.Error values (400 or 413).
// No error names a server path: answers carry these messages, and the
// registry's paths (where a model's files lie) help an attacker aim.
func (r *Registry) Upload(name string, body io.Reader) (*api.ModelVersion, error) {
	mv, err := r.upload(name, body)
	if err != nil {
		return nil, r.scrub(err)
	}
	return mv, nil
}

// uploadPathRE matches a path inside an upload's temporary directory.
var uploadPathRE = regexp.MustCompile(regexp.QuoteMeta(tmpPrefix) + `[^/\s"']*(/` + modelDir + `)?/?`)

// scrub rewrites err's message without the registry's paths: a path in an
// upload becomes its path in the archive, anything else under the
// registry "<registry>". An *api.Error keeps its code; any other error
// stays an internal one.
func (r *Registry) scrub(err error) error {
	clean := func(msg string) string {
		for _, d := range []string{r.abs, r.dir} {
			if d == "" || d == "." {
				continue
			}
			msg = strings.ReplaceAll(msg, d+string(filepath.Separator), "")
			msg = strings.ReplaceAll(msg, d, "<registry>")
		}
		return uploadPathRE.ReplaceAllString(msg, "")
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return &api.Error{Code: ae.Code, Message: clean(ae.Message)}
	}
	return errors.New(clean(err.Error()))
}

func (r *Registry) upload(name string, body io.Reader) (*api.ModelVersion, error) {
	if !ValidName(name) {
		return nil, api.Errorf(api.ErrInvalidParameterValue,
			"model name %q: use 1-255 of letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	tmp, err := os.MkdirTemp(r.dir, tmpPrefix)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place

	artifactSize, err := r.saveArtifact(filepath.Join(tmp, artifactFile), body)
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(tmp, modelDir)
	if err := r.extract(filepath.Join(tmp, artifactFile), dst); err != nil {
		return nil, err
	}
	root, err := modelRoot(dst)
	if err != nil {
		return nil, err
	}
	if root != dst {
		// The tar wrapped the model in one top folder: keep the model at model/.
		if err := os.Rename(root, dst+".root"); err != nil {
			return nil, err
		}
		if err := os.RemoveAll(dst); err != nil {
			return nil, err
		}
		if err := os.Rename(dst+".root", dst); err != nil {
			return nil, err
		}
	}
	m, err := mlmodel.Load(dst)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalidParameterValue, "upload is not a valid MLflow model: %v", err)
	}
	if err := checkFlavorData(dst, m); err != nil {
		return nil, err
	}
	if f, ok := m.Flavors[flavor.Name]; ok {
		// A flavor the worker could not start is refused now, not at the
		// first deployment.
		if _, err := flavor.Parse(dst, f); err != nil {
			return nil, api.Errorf(api.ErrInvalidParameterValue, "MLmodel: %v", err)
		}
	}
	tps, err := tokensPerSecond(m)
	if err != nil {
		return nil, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	v, err := r.nextVersion(name)
	if err != nil {
		return nil, err
	}
	mv := &api.ModelVersion{
		Name:              name,
		Version:           strconv.Itoa(v),
		Flavors:           m.FlavorNames(),
		Signature:         m.Signature,
		Task:              llmTask(m),
		SizeBytes:         artifactSize,
		TokensPerSecond:   tps,
		CreationTimestamp: r.now().UnixMilli(),
	}
	b, _ := json.Marshal(mv)
	if err := os.WriteFile(filepath.Join(tmp, metaFile), b, 0o644); err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	size, err := diskUsage(tmp)
	if err != nil {
		return nil, err
	}
	if err := r.reserve(size); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(r.dir, name), 0o755); err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, name, highestFile), []byte(mv.Version), 0o644); err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(r.dir, name, mv.Version)); err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	r.used += size
	return mv, nil
}

// reserve checks that size more bytes fit under MaxStorage. r.mu must be
// held.
func (r *Registry) reserve(size int64) error {
	if r.used < 0 {
		used, err := r.storedBytes()
		if err != nil {
			return err
		}
		r.used = used
	}
	if limit := orDefault(r.MaxStorage, DefaultMaxStorage); r.used+size > limit {
		return api.Errorf(api.ErrInvalidParameterValue,
			"the model registry holds %d bytes and this version needs %d more, over its limit of %d (--max-model-storage); delete versions no endpoint serves (gantry models delete NAME VERSION) or ask the operator to raise the limit",
			r.used, size, limit)
	}
	return nil
}

// storedBytes measures the stored versions, leaving out uploads in
// progress.
func (r *Registry) storedBytes() (int64, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		n, err := diskUsage(filepath.Join(r.dir, e.Name()))
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// diskUsage adds up the sizes of the regular files under dir.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// Delete removes a stored version. Its number is never given again. The
// caller makes sure no endpoint serves it.
func (r *Registry) Delete(name, version string) error {
	p, err := r.path(name, version)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	size, err := diskUsage(p)
	if err != nil {
		return r.scrub(err)
	}
	// Moved aside first, so that a crash midway leaves an upload leftover
	// (removed at the next Open), never half a version.
	gone := filepath.Join(r.dir, tmpPrefix+"deleted-"+name+"-"+version)
	if err := os.Rename(p, gone); err != nil {
		return r.scrub(err)
	}
	if r.used >= 0 {
		r.used -= size
	}
	r.signatures.Delete(name + "\x00" + version)
	if err := os.RemoveAll(gone); err != nil {
		return r.scrub(err)
	}
	return nil
}

func (r *Registry) saveArtifact(path string, body io.Reader) (int64, error) {
	limit := orDefault(r.MaxUploadSize, DefaultMaxUploadSize)
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(body, limit+1))
	if err != nil {
		return 0, api.Errorf(api.ErrMalformedRequest, "read upload: %v", err)
	}
	if n > limit {
		return 0, api.Errorf(api.ErrPayloadTooLarge, "upload is over the limit of %d bytes", limit)
	}
	if n == 0 {
		return 0, api.Errorf(api.ErrInvalidParameterValue, "upload is empty: send the model directory as a tar.gz body")
	}
	return n, f.Close()
}

// modelRoot finds the MLmodel file: at the top, or inside one top folder.
func modelRoot(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, mlmodel.FileName)); err == nil {
		return dir, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(ents) == 1 && ents[0].IsDir() {
		sub := filepath.Join(dir, ents[0].Name())
		if _, err := os.Stat(filepath.Join(sub, mlmodel.FileName)); err == nil {
			return sub, nil
		}
	}
	return "", api.Errorf(api.ErrInvalidParameterValue, "upload has no MLmodel file at its top: tar the model directory's contents")
}

// llmTask is the task of a model that an LLM runtime serves: the gguf
// flavor's (llm/v1/chat when it names none), or the openai_server
// flavor's when it names one (without, the server takes every task and
// each body, or OpenAI path, says which).
func llmTask(m *mlmodel.Model) string {
	if f, ok := m.Flavors[flavor.Name]; ok {
		t, _ := f["task"].(string)
		return t
	}
	f, ok := m.Flavors["gguf"]
	if !ok {
		return ""
	}
	if t, _ := f["task"].(string); t != "" {
		return t
	}
	return api.TaskChat
}

// checkGGUF checks a gguf flavor at upload: its model_file is in the
// upload, and its task is one the runtime serves.
func checkGGUF(dir string, m *mlmodel.Model) error {
	f, ok := m.Flavors["gguf"]
	if !ok {
		return nil
	}
	file, _ := f["model_file"].(string)
	if file == "" {
		return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor gguf: model_file is required (the GGUF file's path in the model directory)")
	}
	p := filepath.Join(dir, filepath.FromSlash(file))
	if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
		return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor gguf: model_file %q leaves the model directory", file)
	}
	if _, err := os.Stat(p); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor gguf names model_file %q, which is not in the upload", file)
	}
	switch t := llmTask(m); t {
	case api.TaskChat, api.TaskCompletions, api.TaskEmbeddings:
	default:
		return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor gguf: task %q is not one of %s, %s, %s", t, api.TaskChat, api.TaskCompletions, api.TaskEmbeddings)
	}
	return nil
}

// checkFlavorData makes sure every file a flavor names is there, so that a
// model missing its weights is refused now rather than failing in a worker.
func checkFlavorData(dir string, m *mlmodel.Model) error {
	if err := checkGGUF(dir, m); err != nil {
		return err
	}
	for _, name := range m.FlavorNames() {
		data, ok := m.Flavors[name]["data"].(string)
		if !ok || data == "" {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(data))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor %s: data path %q leaves the model directory", name, data)
		}
		if _, err := os.Stat(p); err != nil {
			return api.Errorf(api.ErrInvalidParameterValue, "MLmodel flavor %s names data %q, which is not in the upload", name, data)
		}
	}
	return nil
}

// nextVersion is one above the highest version ever stored, deleted ones
// included. r.mu must be held.
func (r *Registry) nextVersion(name string) (int, error) {
	vs, err := r.versions(name)
	if err != nil {
		return 0, err
	}
	highest := 0
	if len(vs) > 0 {
		highest = vs[len(vs)-1]
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, name, highestFile)); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			highest = max(highest, v)
		}
	}
	return highest + 1, nil
}

// versions lists the stored versions of name in ascending order.
func (r *Registry) versions(name string) ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var vs []int
	for _, e := range ents {
		if v, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() {
			vs = append(vs, v)
		}
	}
	sort.Ints(vs)
	return vs, nil
}

// Get returns a version's metadata, or a RESOURCE_DOES_NOT_EXIST *api.Error.
func (r *Registry) Get(name, version string) (*api.ModelVersion, error) {
	p, err := r.path(name, version)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(p, metaFile))
	if err != nil {
		return nil, r.scrub(fmt.Errorf("model %s version %s: %w", name, version, err))
	}
	mv := new(api.ModelVersion)
	if err := json.Unmarshal(b, mv); err != nil {
		return nil, fmt.Errorf("model %s version %s: %w", name, version, err)
	}
	return mv, nil
}

// List returns every version of every model, by name then version.
func (r *Registry) List() ([]api.ModelVersion, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, err
	}
	out := []api.ModelVersion{}
	for _, e := range ents {
		if !e.IsDir() || !ValidName(e.Name()) {
			continue
		}
		vs, err := r.versions(e.Name())
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			mv, err := r.Get(e.Name(), strconv.Itoa(v))
			if err != nil {
				return nil, err
			}
			out = append(out, *mv)
		}
	}
	return out, nil
}

// SetFeatureSpec attaches the feature spec named spec to a version ("":
// detaches it) and returns the version's metadata. The rest of a version
// never changes; the spec is a reference, kept in meta.json, which is
// replaced whole (written aside, then renamed), so a crash leaves the old
// file or the new one.
func (r *Registry) SetFeatureSpec(name, version, spec string) (*api.ModelVersion, error) {
	p, err := r.path(name, version)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mv, err := r.Get(name, version)
	if err != nil {
		return nil, err
	}
	mv.FeatureSpec = spec
	b, _ := json.Marshal(mv)
	tmp := filepath.Join(p, metaFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return nil, r.scrub(err)
	}
	if err := os.Rename(tmp, filepath.Join(p, metaFile)); err != nil {
		return nil, r.scrub(err)
	}
	cp := *mv
	r.signatures.Store(name+"\x00"+version, &cp)
	return mv, nil
}

// Signature is a stored version's MLflow signature, nil when it has none
// or cannot be read. A stored version never changes but for its feature
// spec (which SetFeatureSpec writes through the cache), so answers are
// cached: the route table asks on every pass, under the scheduler's lock.
func (r *Registry) Signature(name, version string) *api.Schema {
	if mv, _ := r.cached(name, version); mv != nil {
		return mv.Signature
	}
	return nil
}

// FeatureSpec is the feature spec attached to a stored version, "" when
// none is; cached as Signature is.
func (r *Registry) FeatureSpec(name, version string) (string, error) {
	mv, err := r.cached(name, version)
	if err != nil {
		return "", err
	}
	return mv.FeatureSpec, nil
}

// Task is the LLM task a stored version is served for (its gguf flavor's
// task), "" for other models; cached as Signature is.
func (r *Registry) Task(name, version string) string {
	if mv, _ := r.cached(name, version); mv != nil {
		return mv.Task
	}
	return ""
}

// cached is Get from memory after its first answer; a version that
// cannot be read is not cached (it may not be stored yet). LoadOrStore:
// a SetFeatureSpec meanwhile wins over what Get read before it.
func (r *Registry) cached(name, version string) (*api.ModelVersion, error) {
	key := name + "\x00" + version
	if v, ok := r.signatures.Load(key); ok {
		return v.(*api.ModelVersion), nil
	}
	mv, err := r.Get(name, version)
	if err != nil {
		return nil, err
	}
	v, _ := r.signatures.LoadOrStore(key, mv)
	return v.(*api.ModelVersion), nil
}

// Flavors is a model version's MLflow flavors, nil when it is not stored;
// cached as Signature is.
func (r *Registry) Flavors(name, version string) []string {
	if mv, _ := r.cached(name, version); mv != nil {
		return mv.Flavors
	}
	return nil
}

// ModelDir is the extracted MLflow model directory of a version.
func (r *Registry) ModelDir(name, version string) (string, error) {
	p, err := r.path(name, version)
	if err != nil {
		return "", err
	}
	return filepath.Join(p, modelDir), nil
}

// ArtifactPath is the stored tar.gz of a version.
func (r *Registry) ArtifactPath(name, version string) (string, error) {
	p, err := r.path(name, version)
	if err != nil {
		return "", err
	}
	return filepath.Join(p, artifactFile), nil
}

func (r *Registry) path(name, version string) (string, error) {
	if !ValidName(name) {
		return "", api.Errorf(api.ErrResourceDoesNotExist, "model %q does not exist", name)
	}
	if _, err := strconv.Atoi(version); err != nil {
		return "", api.Errorf(api.ErrResourceDoesNotExist, "model %s has no version %q: versions are numbers", name, version)
	}
	p := filepath.Join(r.dir, name, version)
	if _, err := os.Stat(filepath.Join(p, metaFile)); err != nil {
		return "", api.Errorf(api.ErrResourceDoesNotExist, "model %s version %s does not exist", name, version)
	}
	return p, nil
}

func orDefault(v, def int64) int64 {
	if v <= 0 {
		return def
	}
	return v
}

// LLMFlavors are the flavors whose models generate tokens: an entity of
// such a model may take provisioned throughput.
var LLMFlavors = []string{"openai_server", "gguf"}

// tokensPerSecond reads an LLM flavor's tokens_per_second, the rate one
// replica sustains: 0 when absent, a 400 when it is not a positive whole
// number.
func tokensPerSecond(m *mlmodel.Model) (int, error) {
	for _, f := range LLMFlavors {
		if _, ok := m.Flavors[f]["tokens_per_second"]; !ok {
			continue
		}
		n, err := flavor.TokensPerSecond(m.Flavors[f])
		if err != nil {
			return 0, api.Errorf(api.ErrInvalidParameterValue, "MLmodel: flavors.%s: %v", f, err)
		}
		return n, nil
	}
	return 0, nil
}
