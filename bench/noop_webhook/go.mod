module kubectl-gitops/bench/noop_webhook

go 1.22
