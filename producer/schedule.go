package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// Schedule is a recurring job: a cron spec and the imrecall command line
// (a recall or purge) it runs, with relative times (--since 90d) evaluated
// at each firing.
type Schedule struct {
	Name      string    `json:"name"`
	Cron      string    `json:"cron"`
	Args      []string  `json:"args"`
	CreatedBy string    `json:"created_by"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

var scheduleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// cronParser accepts what asynq's scheduler accepts: five fields or a
// descriptor such as @daily or @every 1h.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate names the first bad field.
func (s Schedule) Validate() error {
	if !scheduleName.MatchString(s.Name) {
		return fmt.Errorf("--name %q: want letters, digits, '.', '_' or '-', at most 64", s.Name)
	}
	if _, err := cronParser.Parse(s.Cron); err != nil {
		return fmt.Errorf("--cron %q: %v", s.Cron, err)
	}
	if len(s.Args) == 0 {
		return errors.New("the command to run is missing (after --)")
	}
	if s.CreatedBy == "" {
		return errors.New("--actor: required")
	}
	return nil
}

// Schedules keeps schedules in Redis and gives them to asynq's periodic task
// manager (it implements asynq.PeriodicTaskConfigProvider).
type Schedules struct {
	rdb redis.UniversalClient
	key string
}

// NewSchedules returns the schedules stored under prefix.
func NewSchedules(rdb redis.UniversalClient, prefix string) *Schedules {
	return &Schedules{rdb: rdb, key: prefix + ":schedules"}
}

// Add stores a schedule, replacing one of the same name.
func (s *Schedules) Add(ctx context.Context, sc Schedule) error {
	if err := sc.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return fmt.Errorf("encoding schedule %s: %w", sc.Name, err)
	}
	if err := s.rdb.HSet(ctx, s.key, sc.Name, b).Err(); err != nil {
		return fmt.Errorf("storing schedule %s: %w", sc.Name, err)
	}
	return nil
}

// Remove deletes a schedule; removing an unknown name is an error.
func (s *Schedules) Remove(ctx context.Context, name string) error {
	n, err := s.rdb.HDel(ctx, s.key, name).Result()
	if err != nil {
		return fmt.Errorf("removing schedule %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("schedule %q: no such schedule", name)
	}
	return nil
}

// List returns every schedule, by name.
func (s *Schedules) List(ctx context.Context) ([]Schedule, error) {
	m, err := s.rdb.HGetAll(ctx, s.key).Result()
	if err != nil {
		return nil, fmt.Errorf("listing schedules: %w", err)
	}
	out := make([]Schedule, 0, len(m))
	for name, v := range m {
		var sc Schedule
		if err := json.Unmarshal([]byte(v), &sc); err != nil {
			return nil, fmt.Errorf("schedule %s: %w", name, err)
		}
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// GetConfigs implements asynq.PeriodicTaskConfigProvider. Each firing is
// unique for a minute, so two schedulers never run a schedule twice.
func (s *Schedules) GetConfigs() ([]*asynq.PeriodicTaskConfig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*asynq.PeriodicTaskConfig, 0, len(list))
	for _, sc := range list {
		task, err := tasks.NewScheduleRunTask(tasks.ScheduleRun{Name: sc.Name, Args: sc.Args})
		if err != nil {
			return nil, err
		}
		out = append(out, &asynq.PeriodicTaskConfig{Cronspec: sc.Cron, Task: task, Opts: []asynq.Option{asynq.Unique(time.Minute)}})
	}
	return out, nil
}
