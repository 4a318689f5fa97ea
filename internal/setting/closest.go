package setting

import "strings"

// Closest returns the name in known nearest to name, for a "did you mean"
// after a mistyped value (a table, an entity); "" when name is itself
// known or none is close: within two edits, one for names of up to five
// letters (so "a" does not suggest "bc"). Case is ignored; ties go to the
// earlier name in known.
func Closest(name string, known []string) string {
	if name == "" {
		return ""
	}
	lower := strings.ToLower(name)
	best, bestDist := "", min(2, max(1, len([]rune(name))/3))+1
	for _, k := range known {
		if k == name {
			return ""
		}
		if d := Distance(lower, strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// Distance is the Levenshtein edit distance between a and b, counted in
// runes; the standard library has none and names are short.
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
