// Package setting marks an error with the configuration setting that fixes
// it, named in library terms: the YAML key where one exists ("store",
// "worker.lease_ttl"), else the option's name in snake case under its
// component ("resync.run_id"). Library packages wrap their configuration
// errors in an *Error and word the message for a Go caller; the edge that
// knows how a setting is given (the CLI's flags, YAML keys and environment
// variables) finds the key with errors.As and adds that hint once.
package setting

import (
	"errors"
	"fmt"
)

// Error is a configuration error: Err says what is wrong, Key which
// setting fixes it. Error() is Err's message alone, so a library user
// reads no key they did not write.
type Error struct {
	Key string
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Errorf formats like fmt.Errorf (%w included) and marks the result with key.
func Errorf(key, format string, args ...any) error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// Wrap marks err with key; nil stays nil. It is for the caller that knows
// which setting a component was given, when the component cannot (a
// limiter opened with the state store's URL).
func Wrap(key string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Key: key, Err: err}
}

// Key returns the key of the first *Error in err's tree, "" when there is none.
func Key(err error) string {
	var se *Error
	if errors.As(err, &se) {
		return se.Key
	}
	return ""
}
