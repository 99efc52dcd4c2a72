package testutil

import (
	"reflect"
	"testing"
)

// CheckSumsEveryField fills a T with a distinct value in each of its integer
// fields (time.Duration included), adds it to a zero T with add, and fails t
// if any field did not come through: a counter added to a stats struct but
// not to its Add.
func CheckSumsEveryField[T any](t testing.TB, add func(sum *T, o T)) {
	t.Helper()
	var o T
	v := reflect.ValueOf(&o).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.CanInt() && f.CanSet() {
			f.SetInt(int64(i + 1))
		}
	}
	var sum T
	add(&sum, o)
	add(&sum, o)
	s := reflect.ValueOf(sum)
	for i := range v.NumField() {
		if f := v.Field(i); f.CanInt() && f.CanSet() && s.Field(i).Int() != 2*f.Int() {
			t.Errorf("%T.%s: sum %d, want %d", o, v.Type().Field(i).Name, s.Field(i).Int(), 2*f.Int())
		}
	}
}
