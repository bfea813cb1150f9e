package imrecall_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tim"
	"github.com/imrecall/imrecall/worker"
	"github.com/redis/go-redis/v9"
)

// Example plans and runs a purge of what a spammer sent to a group: a dry
// run first, then the job, which an in-process worker runs against the IM
// emulator, then its report. In production Redis is a real one, the IM
// API is Tencent's, and the worker runs as `imrecall worker`.
func Example() {
	ctx := context.Background()
	const app, admin, secret = 1400000001, "administrator", "example-secret"

	// Redis (miniredis here) and the IM API (the emulator here).
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	emu, err := emulator.New(emulator.Config{SDKAppID: app, Admin: admin, SecretKey: secret})
	if err != nil {
		log.Fatal(err)
	}
	api := httptest.NewServer(emu)
	defer api.Close()

	// One IM client for discovery and the worker, every call through the
	// shared limiter.
	lim, err := limiter.New(rdb, limiter.Config{})
	if err != nil {
		log.Fatal(err)
	}
	im, err := tim.New(tim.Config{SDKAppID: app, Admin: admin, SecretKey: secret, BaseURL: api.URL, Gate: lim.ForApp(app)})
	if err != nil {
		log.Fatal(err)
	}
	group := seed(ctx, im)

	// A worker in this process: the recall lanes and discovery.
	redisOpt := asynq.RedisClientOpt{Addr: mr.Addr()}
	queue := asynq.NewClient(redisOpt)
	defer queue.Close()
	store := jobs.NewStore(rdb, "")
	quiet := slog.New(slog.DiscardHandler)
	discover := producer.NewDiscoverHandler(im, store, queue, quiet)
	srv, err := worker.NewServer(worker.ServerConfig{
		Redis:           redisOpt,
		Handler:         worker.New(worker.TIM{C: im}, store, worker.Config{AppID: app, Logger: quiet}),
		Discovery:       asynq.HandlerFunc(discover.Handle),
		DiscoveryErrors: asynq.ErrorHandlerFunc(discover.HandleError),
		Concurrency:     8,
		PollInterval:    10 * time.Millisecond,
		Logger:          quiet,
		LogLevel:        asynq.FatalLevel,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	// The client: plan, create, wait, report.
	client, err := imrecall.New(imrecall.Config{Redis: rdb, Queue: queue, AppID: app, IM: im, Poll: 20 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	req := imrecall.GroupPurge{Groups: []string{group}, Senders: []string{"spammer"}}
	plan, err := client.Plan(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("dry run: %d messages from %s, %d group call(s)\n", plan.Messages, plan.Source, plan.GroupCalls)

	created, err := client.Create(ctx, req, imrecall.CreateOptions{Actor: "example", Reason: "spam wave", Confirmed: true})
	if err != nil {
		log.Fatal(err)
	}
	job, err := client.Wait(ctx, created.Job.ID, nil)
	if err != nil {
		log.Fatal(err)
	}
	rep, err := client.Report(ctx, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	c := rep.Job.Counts
	fmt.Printf("job %s: planned %d, recalled %d, dead-lettered %d, reconciled %v\n", rep.Job.Status, c.Planned, c.Recalled, c.DeadLettered, rep.Reconciled)
	// Output:
	// dry run: 12 messages from scan, 2 group call(s)
	// job done: planned 12, recalled 12, dead-lettered 0, reconciled true
}

// seed creates two users and a group, in which the spammer sends 12
// messages and another user 3.
func seed(ctx context.Context, im *tim.Client) string {
	if _, err := im.MultiAccountImport(ctx, tim.MultiAccountImportRequest{Accounts: []string{"spammer", "bob"}}); err != nil {
		log.Fatal(err)
	}
	g, err := im.CreateGroup(ctx, tim.CreateGroupRequest{Type: "Public", GroupID: "@TGS#example", Name: "example",
		MemberList: []tim.Member{{MemberAccount: "spammer"}, {MemberAccount: "bob"}}})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 15 {
		from := "spammer"
		if i%5 == 4 {
			from = "bob"
		}
		if _, err := im.SendGroupMsg(ctx, tim.SendGroupMsgRequest{GroupID: g.GroupID, Random: uint32(i + 1), FromAccount: from,
			MsgBody: tim.TextBody(fmt.Sprintf("message %d", i))}); err != nil {
			log.Fatal(err)
		}
	}
	return g.GroupID
}
