package tim_test

import (
	"errors"
	"fmt"

	"github.com/imrecall/imrecall/tim"
)

func ExampleClassify() {
	for _, code := range []int{0, 20023, 10030, 91000, 60007, 70001} {
		fmt.Printf("%d %s: %s\n", code, tim.Classify(code), tim.Describe(code))
	}
	// Output:
	// 0 ok: success
	// 20023 done: message was already recalled
	// 10030 permanent: message to recall does not exist
	// 91000 retry: internal server error, retry
	// 60007 throttled: REST API call frequency over the limit
	// 70001 auth: UserSig expired
}

func ExampleClassOf() {
	err := fmt.Errorf("recall job 7: %w", &tim.Error{API: "admin_msgwithdraw", HTTPStatus: 200, Code: 20023, Info: "msg already withdrawn"})
	var e *tim.Error
	if errors.As(err, &e) {
		fmt.Println(e.API, e.Code, tim.ClassOf(err))
	}
	fmt.Println(err)
	// Output:
	// admin_msgwithdraw 20023 done
	// recall job 7: tim admin_msgwithdraw: ErrorCode 20023 (message was already recalled): msg already withdrawn
}

func ExampleBaseURL() {
	for _, s := range []string{"singapore", "china", "http://127.0.0.1:8080/"} {
		u, _ := tim.BaseURL(s)
		fmt.Println(u)
	}
	// Output:
	// https://adminapisgp.im.qcloud.com
	// https://console.tim.qq.com
	// http://127.0.0.1:8080
}

func ExampleSecret() {
	cfg := tim.Config{SDKAppID: 1400000001, Admin: "administrator", SecretKey: "do-not-print", BaseURL: "china"}
	fmt.Printf("%v\n%+v\n", cfg.SecretKey, cfg.SecretKey)
	// Output:
	// [REDACTED]
	// [REDACTED]
}
