package scoring

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"

	"github.com/gantry/gantry/api"
)

// naValues are the cells pandas' read_csv reads as missing by default; MLflow
// reads CSV bodies with read_csv, so clients write missing values this way.
var naValues = map[string]bool{
	"": true, "#N/A": true, "#N/A N/A": true, "#NA": true, "-1.#IND": true,
	"-1.#QNAN": true, "-NaN": true, "-nan": true, "1.#IND": true, "1.#QNAN": true,
	"<NA>": true, "N/A": true, "NA": true, "NULL": true, "NaN": true,
	"None": true, "n/a": true, "nan": true, "null": true,
}

var utf8BOM = []byte("\ufeff")

// ParseCSV parses a CSV scoring body whose first row names the columns.
// Cells are strings, or nil for a missing value. The request does not refer
// to body, which the caller may reuse.
func ParseCSV(body []byte) (*Request, error) {
	// Spreadsheet programs start their CSV files with a byte order mark.
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, utf8BOM)))
	header, err := r.Read()
	if err == io.EOF {
		return nil, api.Errorf(api.ErrMalformedRequest, "CSV body is empty; its first row must name the columns")
	}
	if err != nil {
		return nil, api.Errorf(api.ErrMalformedRequest, "invalid CSV: %v", err)
	}
	if err := checkUnique(header, "the CSV header"); err != nil {
		return nil, err
	}
	req := &Request{Frame: Frame{Columns: header}}
	n := len(header)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount) {
				return nil, api.Errorf(api.ErrInvalidParameterValue,
					"CSV line %d has %d fields but the header has %d", pe.StartLine, len(rec), n)
			}
			return nil, api.Errorf(api.ErrMalformedRequest, "invalid CSV: %v", err)
		}
		row := make([]any, n)
		for j, cell := range rec {
			if !naValues[cell] {
				row[j] = cell
			}
		}
		req.Frame.Rows = append(req.Frame.Rows, row)
	}
	if req.Frame.Rows == nil {
		req.Frame.Rows = [][]any{}
	}
	return req, nil
}
