package routes

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gantry/gantry/api"
)

func TestWaitReturnsAtOnceForOldIndex(t *testing.T) {
	tb := NewTable()
	got, err := tb.Wait(context.Background(), 0)
	if err != nil || got.Index != 1 {
		t.Fatalf("Wait(0) = %v, %v; want index 1", got, err)
	}
}

func TestWaitBlocksUntilPublish(t *testing.T) {
	tb := NewTable()
	done := make(chan *api.RouteTable)
	go func() {
		rt, _ := tb.Wait(context.Background(), 1)
		done <- rt
	}()
	select {
	case <-done:
		t.Fatal("Wait returned before a publish")
	case <-time.After(20 * time.Millisecond):
	}
	tb.Publish([]api.EndpointRoute{{Name: "a"}})
	select {
	case rt := <-done:
		if rt.Index != 2 || rt.Endpoints[0].Name != "a" {
			t.Fatalf("got %+v", rt)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not wake on publish")
	}
}

func TestWaitHonoursContext(t *testing.T) {
	tb := NewTable()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	rt, err := tb.Wait(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || rt.Index != 1 {
		t.Fatalf("Wait = %v, %v; want current table and DeadlineExceeded", rt, err)
	}
}
