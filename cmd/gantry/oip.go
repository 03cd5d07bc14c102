package main

import "bytes"

// oipPrefix is the Open Inference Protocol's path (/v2/models/..., /v2/health/...),
// which the activator answers next to MLflow invocations.
var oipPrefix = []byte("/v2/")

// isInvocation reports whether the path as sent goes to the activator: an
// MLflow invocation or an Open Inference Protocol request.
func isInvocation(path []byte) bool {
	return bytes.HasPrefix(path, invocationsPrefix) || bytes.HasPrefix(path, oipPrefix)
}
