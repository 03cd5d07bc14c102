package registry

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/gantry/gantry/api"
)

// extract unpacks the tar.gz at src into dst, refusing anything that could
// write outside dst (absolute paths, "..", links) and bounding the total size
// and file count so that a small upload cannot fill the disk.
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
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return api.Errorf(api.ErrInvalidParameterValue, "upload is not a valid tar.gz: %v", err)
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
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			files++
			if files > maxFiles {
				return api.Errorf(api.ErrInvalidParameterValue, "upload has more than %d files", maxFiles)
			}
			if h.Size < 0 || total+h.Size > maxBytes {
				return api.Errorf(api.ErrPayloadTooLarge, "upload unpacks to more than %d bytes", maxBytes)
			}
			total += h.Size
			if err := writeFile(target, tr, h.Size); err != nil {
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

func writeFile(target string, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	// O_EXCL: a second entry with the same name must not overwrite the first.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return api.Errorf(api.ErrInvalidParameterValue, "upload has %q twice", target)
		}
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(f, r, size); err != nil {
		return api.Errorf(api.ErrInvalidParameterValue, "upload is truncated: %v", err)
	}
	return f.Close()
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
