#include "api/client.hpp"

#include <curl/curl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace popek::api {

namespace {

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

size_t append_body(char* data, size_t size, size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

std::string hint(const std::string& path) { return " (is popek running with --api-sock " + path + "?)"; }

// Before curl: its messages for a missing socket are about "localhost".
base::Result<void> check_socket(const std::string& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return base::Error{"no API socket at " + path + hint(path), ENOENT};
        return base::Error::from_errno("API socket " + path);
    }
    if (!S_ISSOCK(st.st_mode)) return base::Error{path + " is not a socket" + hint(path), ENOTSOCK};
    return base::ok();
}

}  // namespace

base::Result<Response> Client::request(const std::string& method, const std::string& path,
                                       const std::string& body) const {
    POPEK_TRY(check_socket(path_));
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) return base::Error{"curl_easy_init failed"};
    CURL* c = curl.get();
    Response response;
    char error[CURL_ERROR_SIZE] = {};
    const std::string url = "http://localhost" + path;
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, path_.c_str());
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &append_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
    // "Expect:" off: no 100-continue round trip before a body.
    std::unique_ptr<curl_slist, SlistDeleter> headers(curl_slist_append(nullptr, "Expect:"));
    if (!body.empty() || method != "GET") {
        headers.reset(curl_slist_append(headers.release(), "Content-Type: application/json"));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

    const CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_COULDNT_CONNECT) {
        // curl's own message is about "localhost port 80"; the errno says it.
        long err = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &err);
        const int e = err != 0 ? static_cast<int>(err) : ECONNREFUSED;
        return base::Error{"cannot connect to " + path_ + ": " + std::strerror(e) +
                               (e == ECONNREFUSED ? hint(path_) : std::string()),
                           e};
    }
    if (rc != CURLE_OK)
        return base::Error{method + " " + path + " on " + path_ + ": " +
                           (error[0] != 0 ? std::string(error) : curl_easy_strerror(rc))};
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    const char* type = nullptr;
    if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type != nullptr)
        response.content_type = type;
    return response;
}

}  // namespace popek::api
