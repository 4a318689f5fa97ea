package fakeapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/eventsync/eventsync/internal/setting"
)

// stateFormat identifies a state file; the first line of one is a header
// {"format":"eventsync-fakeapi-state","format_version":1,"next_id":N}, then one
// {"collection":"...","record":{...}} line per record.
const (
	stateFormat        = "eventsync-fakeapi-state"
	stateFormatVersion = 1
)

type stateHeader struct {
	Format        string `json:"format"`
	FormatVersion int    `json:"format_version"`
	NextID        uint64 `json:"next_id"`
}

type stateLine struct {
	Collection string          `json:"collection"`
	Record     json.RawMessage `json:"record"`
}

// Save writes every record to the configured state file atomically: a
// temporary file in the same directory, synced, then renamed over it.
func (s *Server) Save() error {
	if s.cfg.StateFile == "" {
		return setting.Errorf("fakeapi.state_file", "save state: no state file configured (Config.StateFile)")
	}
	return s.SaveTo(s.cfg.StateFile)
}

// SaveTo writes every record to path atomically (see Save).
func (s *Server) SaveTo(path string) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save state to %s: %w; is the directory writable?", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 256<<10)
	if err = s.writeState(bw); err != nil {
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("save state to %s: sync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state to %s: %w", path, err)
	}
	// Make the rename itself durable.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func (s *Server) writeState(w io.Writer) error {
	hdr, err := json.Marshal(stateHeader{Format: stateFormat, FormatVersion: stateFormatVersion, NextID: s.nextID.Load()})
	if err != nil {
		return err
	}
	if _, err := w.Write(append(hdr, '\n')); err != nil {
		return err
	}
	colls := s.collectionNames()
	names := make([]string, 0, len(colls))
	for n := range colls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		prefix := []byte(`{"collection":` + strconv.Quote(name) + `,"record":`)
		err := colls[name].each(func(rec *record) error {
			if _, err := w.Write(prefix); err != nil {
				return err
			}
			if _, err := w.Write(rec.body); err != nil {
				return err
			}
			_, err := w.Write([]byte("}\n"))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// load reads a state file written by Save and returns the number of
// records loaded. A missing file is reported as os.ErrNotExist.
func (s *Server) load(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("load state file: %w", err)
	}
	defer f.Close()
	n, err := s.readState(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		return n, fmt.Errorf("load state file %s: %w; fix or delete the file", path, err)
	}
	return n, nil
}

func (s *Server) readState(r io.Reader) (int, error) {
	dec := json.NewDecoder(r)
	var hdr stateHeader
	if err := dec.Decode(&hdr); err != nil {
		return 0, fmt.Errorf("header: %w", err)
	}
	if hdr.Format != stateFormat || hdr.FormatVersion != stateFormatVersion {
		return 0, fmt.Errorf("not a fakeapi state file (format %q version %d, want %q version %d)", hdr.Format, hdr.FormatVersion, stateFormat, stateFormatVersion)
	}
	maxID := hdr.NextID
	n := 0
	for {
		var line stateLine
		err := dec.Decode(&line)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("record %d: %w", n+1, err)
		}
		if !validCollection(line.Collection) {
			return n, fmt.Errorf("record %d: invalid collection name %q", n+1, line.Collection)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(line.Record, &fields); err != nil || fields == nil {
			return n, fmt.Errorf("record %d: want a JSON object, got %s", n+1, truncate(string(line.Record), 40))
		}
		var id string
		if err := json.Unmarshal(fields["id"], &id); err != nil || id == "" {
			return n, fmt.Errorf("record %d: missing string \"id\"", n+1)
		}
		rec, err := buildRecord(fields, line.Record, id, s.cfg.VersionField)
		if err != nil {
			return n, fmt.Errorf("record %d: %w", n+1, err)
		}
		if v, err := strconv.ParseUint(id, 10, 64); err == nil && v > maxID {
			maxID = v // never hand out an id that is already taken
		}
		s.collection(line.Collection, true).insert(rec)
		n++
	}
	s.nextID.Store(maxID)
	return n, nil
}
