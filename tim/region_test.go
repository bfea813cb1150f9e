package tim

import "testing"

func TestBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "china", want: "https://console.tim.qq.com"},
		{in: "Singapore", want: "https://adminapisgp.im.qcloud.com"},
		{in: "seoul", want: "https://adminapikr.im.qcloud.com"},
		{in: "tokyo", want: "https://adminapijpn.im.qcloud.com"},
		{in: "frankfurt", want: "https://adminapiger.im.qcloud.com"},
		{in: "mumbai", want: "https://adminapiind.im.qcloud.com"},
		{in: "siliconvalley", want: "https://adminapiusa.im.qcloud.com"},
		{in: "silicon-valley", want: "https://adminapiusa.im.qcloud.com"},
		{in: "USA", want: "https://adminapiusa.im.qcloud.com"},
		{in: " jakarta ", want: "https://adminapiidn.im.qcloud.com"},
		{in: "adminapisgp.im.qcloud.com", want: "https://adminapisgp.im.qcloud.com"},
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080"},
		{in: "https://proxy.example/im/", want: "https://proxy.example/im"},
		{in: "", wantErr: true},
		{in: "mars", wantErr: true},
		{in: "ftp://x", wantErr: true},
		{in: "http://", wantErr: true},
		{in: "http://h/?usersig=x", wantErr: true},
		{in: "http://user:pw@h", wantErr: true},
		{in: "http://h/#frag", wantErr: true},
		{in: "http://[::1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := BaseURL(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("BaseURL(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("BaseURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if len(Regions()) != len(regions) {
		t.Errorf("Regions() = %v", Regions())
	}
}
