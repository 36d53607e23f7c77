// The control API against a real VM: states, bad requests, metrics, shutdown.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api/client.hpp"
#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class ApiVm : public ::testing::Test {
protected:
    void start(const std::string& workload) {
        sock_ = dir_.path("api.sock");
        child_ = std::make_unique<Child>(std::vector<std::string>{
            POPEK_BIN, "run", "--kernel", POPEK_PROBE, "--cmdline", workload, "--memory", "64M", "--api-sock", sock_});
        ASSERT_TRUE(child_->wait_for_line("PROBE-READY", 30s)) << child_->err();
    }
    void TearDown() override {
        child_.reset();
    }
    api::Response call(const std::string& method, const std::string& path, const std::string& body = {}) {
        auto r = api::Client(sock_).request(method, path, body);
        EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
        return r.ok() ? *r : api::Response{};
    }
    static std::string error_of(const api::Response& r) {
        auto j = json::parse(r.body, nullptr, false);
        return j.is_object() && j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>() : "";
    }

    TempDir dir_;
    std::string sock_;
    std::unique_ptr<Child> child_;
};

TEST_F(ApiVm, PauseResumeAndStateErrors) {
    start("compute 1000000");
    auto info = call("GET", "/vm");
    ASSERT_EQ(info.status, 200);
    EXPECT_EQ(json::parse(info.body)["state"], "running");

    auto resume = call("PUT", "/vm/resume");
    EXPECT_EQ(resume.status, 409);
    EXPECT_NE(error_of(resume).find("not paused"), std::string::npos) << resume.body;

    ASSERT_EQ(call("PUT", "/vm/pause").status, 200);
    EXPECT_EQ(json::parse(call("GET", "/vm").body)["state"], "paused");
    // Paused means paused: the vCPU's run time stops growing.
    auto run_seconds = [&] {
        auto m = call("GET", "/metrics").body;
        auto at = m.find("popek_vcpu_run_seconds_total{vcpu=\"0\"} ");
        return at == std::string::npos ? -1.0 : std::stod(m.substr(at + 39));
    };
    const double t1 = run_seconds();
    usleep(200 * 1000);  // long enough for a running vCPU to add run time
    EXPECT_EQ(run_seconds(), t1);

    auto again = call("PUT", "/vm/pause");
    EXPECT_EQ(again.status, 409);
    EXPECT_NE(error_of(again).find("already paused"), std::string::npos);
    ASSERT_EQ(call("PUT", "/vm/resume").status, 200);
    EXPECT_EQ(json::parse(call("GET", "/vm").body)["state"], "running");
}

TEST_F(ApiVm, BadRequestsGetA4xxAndTheVmKeepsRunning) {
    start("compute 1000000");
    struct Case {
        const char* method;
        const char* path;
        const char* body;
        long status;
        const char* says;
    };
    const Case cases[] = {
        {"PUT", "/vm/snapshot", "{\"path\": ", 400, "JSON"},
        {"PUT", "/vm/snapshot", "{\"path\": \"/tmp/x\", \"compress\": true}", 400, "compress"},
        {"PUT", "/vm/snapshot", "{\"path\": 42}", 400, "path"},
        {"PUT", "/vm/snapshot", "{\"path\": \"relative/dir\"}", 400, "absolute"},
        {"PUT", "/vm/shutdown", "{\"timeout_ms\": \"soon\"}", 400, "timeout_ms"},
        {"GET", "/vm/pause", "", 405, ""},
        {"GET", "/nowhere", "", 404, ""},
    };
    for (const auto& c : cases) {
        auto r = call(c.method, c.path, c.body);
        EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body << " -> " << r.body;
        EXPECT_NE(error_of(r).find(c.says), std::string::npos) << r.body;
    }
    EXPECT_EQ(json::parse(call("GET", "/vm").body)["state"], "running");
}

TEST_F(ApiVm, MetricsInPrometheusFormat) {
    start("compute 1000000");
    auto m = call("GET", "/metrics");
    ASSERT_EQ(m.status, 200);
    EXPECT_NE(m.content_type.find("text/plain"), std::string::npos);
    for (const char* name : {"# TYPE popek_vcpu_exits_total counter", "popek_vcpu_exits_total{vcpu=\"0\",reason=\"io\"} ",
                             "popek_vcpu_run_seconds_total{vcpu=\"0\"} ", "popek_memory_guest_bytes 67108864",
                             "popek_memory_resident_bytes ", "popek_vm_running 1"})
        EXPECT_NE(m.body.find(name), std::string::npos) << name << "\n" << m.body;
}

TEST_F(ApiVm, ShutdownPressesThePowerButton) {
    start("wait-power-button");
    ASSERT_TRUE(child_->wait_for_line("PROBE-WAIT power-button", 30s)) << child_->out();
    ASSERT_EQ(call("PUT", "/vm/shutdown", "{\"timeout_ms\": 20000}").status, 200);
    auto r = child_->finish(30s);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(line_starting(r.out, "PROBE-DONE power-button"), "") << r.out;
    EXPECT_EQ(r.err.find("forced"), std::string::npos) << r.err;
}

TEST_F(ApiVm, ShutdownIsForcedWhenTheGuestIgnoresTheButton) {
    start("compute 1000000");
    ASSERT_EQ(call("PUT", "/vm/shutdown", "{\"timeout_ms\": 300}").status, 200);
    auto r = child_->finish(30s);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("forced power-off"), std::string::npos) << r.err;
    EXPECT_EQ(line_starting(r.out, "PROBE-DONE"), "") << "the guest was still computing";
}

}  // namespace
}  // namespace popek::test
