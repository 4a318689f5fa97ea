// Package envfile reads a setting from the environment the way container
// platforms hand out secrets: the variable NAME itself, or the file named
// by NAME_FILE (a Kubernetes or Docker secret mounted as a file), so a
// password never has to sit in the process's environment or its manifest.
package envfile

import (
	"fmt"
	"os"
	"strings"
)

// Suffix turns a variable's name into the name of the variable that names
// its file.
const Suffix = "_FILE"

// Lookup returns the value of the variable name: the variable itself, or
// the contents of the file named by name_FILE without its trailing line
// breaks (files written by editors and echo end with one). ok is false
// when neither is set. Setting both, an empty name_FILE and an unreadable
// file are errors naming the variable; the file's contents never appear
// in them. lookup is os.LookupEnv and readFile os.ReadFile outside tests.
func Lookup(name string, lookup func(string) (string, bool), readFile func(string) ([]byte, error)) (value string, ok bool, err error) {
	value, direct := lookup(name)
	path, viaFile := lookup(name + Suffix)
	switch {
	case !viaFile:
		return value, direct, nil
	case direct:
		return "", false, fmt.Errorf("both %s and %s%s are set; set one of them", name, name, Suffix)
	case path == "":
		return "", false, fmt.Errorf("%s%s is empty; set it to the path of the file holding %s", name, Suffix, name)
	}
	if readFile == nil {
		readFile = os.ReadFile
	}
	data, err := readFile(path)
	if err != nil {
		return "", false, fmt.Errorf("%s%s: read the file holding %s: %w", name, Suffix, name, err)
	}
	return strings.TrimRight(string(data), "\r\n"), true, nil
}
