package fakeapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("PUT /_admin/faults", s.putFaults)
	mux.HandleFunc("DELETE /_admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		zero := Duration(0)
		if err := s.SetFaults(Faults{OutageFor: &zero}); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("GET /_admin/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("POST /_admin/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_admin/save", func(w http.ResponseWriter, _ *http.Request) {
		if s.cfg.StateFile == "" {
			writeError(w, http.StatusConflict, "no state file configured; start the fake API with one (\"eventsync fakeapi --state-file PATH\", or Config.StateFile)")
			return
		}
		if err := s.Save(); err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"saved": s.cfg.StateFile})
	})
	mux.HandleFunc("GET /_admin/records/{collection}", s.dumpRecords)
	mux.HandleFunc("GET /_admin/traces", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.TracedRequests())
	})
	mux.HandleFunc("POST /_admin/expire-tokens", func(w http.ResponseWriter, _ *http.Request) {
		s.ExpireTokens()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route "+r.Method+" "+r.URL.Path+"; the API is under /v1/{collection}, admin under /_admin/{faults,stats,reset,save,records/{collection},traces,expire-tokens}")
	})
	return mux
}

func (s *Server) putFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read faults document: "+err.Error())
		return
	}
	// Merge into the faults as given, so a default (burst from rate_limit)
	// keeps following its source instead of being frozen by the first PUT.
	f, err := ParseFaults(body, s.faults.Load().given)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.SetFaults(f); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.Faults())
}

// dumpRecords streams the collection as NDJSON, one record per line, in
// creation order, through a small buffer whatever the collection's size.
func (s *Server) dumpRecords(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	c := s.collection(r.PathValue("collection"), false)
	if c == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	err := c.each(func(rec *record) error {
		if _, err := bw.Write(rec.body); err != nil {
			return err
		}
		return bw.WriteByte('\n')
	})
	if err == nil {
		_ = bw.Flush()
	}
	// A write error means the client went away; there is no one to tell.
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // error messages say ">=", not "\u003e="
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		_ = enc.Encode(map[string]string{"error": "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
