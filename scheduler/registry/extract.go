package registry

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/gantry/gantry/api"
	"github.com/gantry/gantry/worker/mlmodel"
)

// maxEntryPath bounds an entry's name: Linux's PATH_MAX. It also bounds
// the memory of the set of folders extract keeps.
const maxEntryPath = 4096

// metadataFiles are the files of an MLflow model that are metadata, not
// weights: Gantry parses MLmodel, and none of them is legitimately more
// than a few KiB. They are capped at mlmodel.MaxFileSize before a byte of
// them is written, so that a 1 MB tar.gz holding a 1 GiB MLmodel is
// refused at once instead of being written out and parsed.
var metadataFiles = map[string]bool{
	mlmodel.FileName: true, "conda.yaml": true, "python_env.yaml": true, "requirements.txt": true,
}

// extract unpacks the tar.gz at src into dst, refusing anything that could
// write outside dst (absolute paths, "..", links) and bounding the total size
// and the count of files and folders so that a small upload cannot fill the
// disk or its inodes. Folders count whether the archive lists them or only
// implies them by a file's path: 300,000 empty folders cost a 1.5 MB upload.
// Error messages name entries by their path in the archive, never by dst.
func (r *Registry) extract(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "upload is not a gzip file: send the model directory as a tar.gz")
	}
	defer zr.Close()
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}

	maxBytes := orDefault(r.MaxExtractedSize, DefaultMaxExtractedSize)
	maxFiles := r.MaxFiles
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	var total int64
	files := 0
	dirs := map[string]bool{} // folders made so far, relative to dst
	// entries counts a new file or folder against maxFiles.
	entries := func() error {
		files++
		if files > maxFiles {
			return api.Errorf(api.ErrInvalidParameterValue, "upload has more than %d files and folders; a model directory needs far fewer", maxFiles)
		}
		return nil
	}
	// mkdirs counts the folders rel (a folder) makes, its parents included.
	mkdirs := func(rel string) error {
		for d := rel; d != "." && d != string(filepath.Separator) && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			if err := entries(); err != nil {
				return err
			}
		}
		return nil
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.Errorf(api.ErrInvalidParameterValue, "upload is not a valid tar.gz: %v", err)
		}
		if len(h.Name) > maxEntryPath {
			return api.Errorf(api.ErrInvalidParameterValue, "upload has an entry name of %d bytes; at most %d are allowed", len(h.Name), maxEntryPath)
		}
		rel, err := safePath(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the archive's "./" entry
		}
		target := filepath.Join(dst, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := mkdirs(rel); err != nil {
				return err
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return fmt.Errorf("upload entry %q: make folder: %w", h.Name, pathless(err))
			}
		case tar.TypeReg:
			if err := mkdirs(filepath.Dir(rel)); err != nil {
				return err
			}
			if err := entries(); err != nil {
				return err
			}
			if metadataFiles[filepath.Base(rel)] && h.Size > mlmodel.MaxFileSize {
				return api.Errorf(api.ErrInvalidParameterValue, "upload entry %q is %d bytes; model metadata files may be at most %d bytes",
					h.Name, h.Size, mlmodel.MaxFileSize)
			}
			if h.Size < 0 || total+h.Size > maxBytes {
				return api.Errorf(api.ErrPayloadTooLarge, "upload unpacks to more than %d bytes", maxBytes)
			}
			total += h.Size
			if err := writeFile(target, h.Name, tr, h.Size); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			// PAX metadata, already applied by archive/tar.
		default:
			return api.Errorf(api.ErrInvalidParameterValue,
				"upload entry %q is a link or special file: a model directory may hold only plain files and folders", h.Name)
		}
	}
	return nil
}

// safePath cleans a tar entry name into a relative slash-free path, or
// refuses it when it would leave the destination.
func safePath(name string) (string, error) {
	if strings.Contains(name, "\\") || path.IsAbs(name) {
		return "", api.Errorf(api.ErrInvalidParameterValue, "upload entry %q: absolute paths are not allowed", name)
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	for _, part := range strings.Split(clean, "/") {
		if part == ".." {
			return "", api.Errorf(api.ErrInvalidParameterValue, "upload entry %q: '..' is not allowed in paths", name)
		}
	}
	return filepath.FromSlash(clean), nil
}

// writeFile writes the entry called name (its path in the archive, for
// messages) to target.
func writeFile(target, name string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("upload entry %q: make folder: %w", name, pathless(err))
	}
	// O_EXCL: a second entry with the same name must not overwrite the first.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return api.Errorf(api.ErrInvalidParameterValue, "upload has %q twice", name)
		}
		return fmt.Errorf("upload entry %q: %w", name, pathless(err))
	}
	defer f.Close()
	if _, err := io.CopyN(f, r, size); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "upload is truncated at entry %q: %v", name, pathless(err))
	}
	return f.Close()
}

// pathless drops the path from a file error, keeping what went wrong: the
// path is the server's, which answers must not show.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// TarGz writes the directory dir as a tar.gz to w, with paths relative to
// dir; it is what `gantry models upload` sends.
func TarGz(w io.Writer, dir string) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s is not a plain file or folder", p)
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
