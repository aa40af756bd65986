// Command noop_webhook is a validating admission webhook that allows every request and looks at nothing but its uid.
//
// bench/webhook.py registers it exactly as it registers gitops-webhook, so that the difference between the two is
// what gitops-webhook itself costs a write, and the difference between it and no webhook at all is what calling any
// webhook costs the API server on the same machine. It speaks HTTP/1.1 only, as gitops-webhook does, so that the API
// server's side of the call is the same for both.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

type admissionReview struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Request    *admissionRequest  `json:"request,omitempty"`
	Response   *admissionResponse `json:"response,omitempty"`
}

type admissionRequest struct {
	UID string `json:"uid"`
}

type admissionResponse struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
}

func validate(w http.ResponseWriter, r *http.Request) {
	var review admissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "the body is not an AdmissionReview", http.StatusBadRequest)
		return
	}
	answer := admissionReview{
		APIVersion: review.APIVersion,
		Kind:       review.Kind,
		Response:   &admissionResponse{UID: review.Request.UID, Allowed: true},
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(answer); err != nil {
		log.Printf("answering: %v", err)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8444", "host:port to serve HTTPS on")
	cert := flag.String("cert", "tls.crt", "serving certificate, PEM")
	key := flag.String("key", "tls.key", "its private key, PEM")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/validate", validate)
	server := &http.Server{
		Addr:         *listen,
		Handler:      mux,
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, // HTTP/1.1 only
	}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
