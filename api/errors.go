package api

import "fmt"

// Error codes of the API; each maps to one HTTP status (HTTPStatus).
const (
	ErrInvalidParameterValue  = "INVALID_PARAMETER_VALUE"
	ErrMalformedRequest       = "MALFORMED_REQUEST"
	ErrUnauthenticated        = "UNAUTHENTICATED"
	ErrPermissionDenied       = "PERMISSION_DENIED"
	ErrResourceDoesNotExist   = "RESOURCE_DOES_NOT_EXIST"
	ErrResourceAlreadyExists  = "RESOURCE_ALREADY_EXISTS"
	ErrResourceConflict       = "RESOURCE_CONFLICT"
	ErrRequestLimitExceeded   = "REQUEST_LIMIT_EXCEEDED"
	ErrPayloadTooLarge        = "PAYLOAD_TOO_LARGE"
	ErrTemporarilyUnavailable = "TEMPORARILY_UNAVAILABLE"
	ErrDeadlineExceeded       = "DEADLINE_EXCEEDED"
	ErrInternal               = "INTERNAL_ERROR"
)

// HTTPStatus is the HTTP status that goes with an error code.
func HTTPStatus(code string) int {
	switch code {
	case ErrInvalidParameterValue, ErrMalformedRequest:
		return 400
	case ErrUnauthenticated:
		return 401
	case ErrPermissionDenied:
		return 403
	case ErrResourceDoesNotExist:
		return 404
	case ErrResourceAlreadyExists, ErrResourceConflict:
		return 409
	case ErrPayloadTooLarge:
		return 413
	case ErrRequestLimitExceeded:
		return 429
	case ErrTemporarilyUnavailable:
		return 503
	case ErrDeadlineExceeded:
		return 504
	}
	return 500
}

// Error is the body of every error answer: {"error_code": ..., "message": ...}.
type Error struct {
	Code    string `json:"error_code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// UnexpectedResponseError is what the client returns for a non-2xx answer.
// Callers inspect it with errors.As, never by matching strings.
type UnexpectedResponseError struct {
	status int
	body   []byte
	err    *Error // the decoded body, when it had the API's error shape
}

// StatusCode is the HTTP status of the answer.
func (e *UnexpectedResponseError) StatusCode() int { return e.status }

// Body is the raw body of the answer.
func (e *UnexpectedResponseError) Body() []byte { return e.body }

// Unwrap gives the API error the body carried, if any.
func (e *UnexpectedResponseError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

func (e *UnexpectedResponseError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s (HTTP %d)", e.err.Message, e.status)
	}
	return fmt.Sprintf("unexpected response: HTTP %d: %s", e.status, e.body)
}
