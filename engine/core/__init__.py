"""The pure core: values, parsing, normalisation, drift, the admission decision, the audit chain and the webhook's
registration, as functions of their inputs. Nothing here does I/O, starts a thread, reads the clock or the
environment, or imports kubernetes, urllib3, git, subprocess, threading or flask (hack/test checks it with
import-linter): a caller passes in what the world said, and gets back what to do."""
