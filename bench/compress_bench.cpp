// Page codec throughput (MiB/s of guest pages) and ratio (record bytes /
// page bytes) on a few page mixes.
//   popek_compress_bench [--memory FILE] [--binary FILE] [benchmark flags]
// --memory: a guest memory image (a snapshot's memory.bin), used as is,
// zero pages included; --binary: an executable, as code/data-like pages.
// Text pages come from /usr/include, random pages from a PRNG.
#include <benchmark/benchmark.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "migration/compress/codec.hpp"
#include "migration/compress/context.hpp"

namespace {

using namespace popek::migration::compress;
using Page = std::array<uint8_t, kPageSize>;
constexpr size_t kMixPages = 2048;  // 8 MiB per mix

struct Mix {
    std::string name;
    std::vector<Page> pages;
    std::vector<Page> previous;  // non-empty: the cached versions (an XBZRLE re-send)
};

std::vector<Page> file_pages(const std::string& path, size_t max_pages) {
    std::vector<Page> out;
    std::ifstream f(path, std::ios::binary);
    Page p{};
    while (out.size() < max_pages && f.read(reinterpret_cast<char*>(p.data()), kPageSize)) out.push_back(p);
    return out;
}

std::vector<Page> text_pages() {
    std::string text;
    for (const auto& e : std::filesystem::directory_iterator("/usr/include")) {
        if (!e.is_regular_file() || e.path().extension() != ".h") continue;
        std::ifstream f(e.path());
        text.append(std::istreambuf_iterator<char>(f), {});
        if (text.size() >= kMixPages * kPageSize) break;
    }
    std::vector<Page> out;
    for (size_t at = 0; at + kPageSize <= text.size() && out.size() < kMixPages; at += kPageSize) {
        Page p;
        std::memcpy(p.data(), text.data() + at, kPageSize);
        out.push_back(p);
    }
    return out;
}

std::vector<Mix> make_mixes(const std::string& memory, const std::string& binary) {
    std::mt19937_64 rng(1);
    std::vector<Mix> mixes;
    Mix random{"random", {}, {}};
    Mix zero_heavy{"zero-heavy", {}, {}};
    Mix ints{"ints+pointers", {}, {}};
    for (size_t i = 0; i < kMixPages; ++i) {
        Page r, w{};
        for (size_t b = 0; b < kPageSize; b += 8) {
            const uint64_t v = rng();
            std::memcpy(r.data() + b, &v, 8);
        }
        for (size_t b = 0; b < kPageSize; b += 16) {  // {pointer, small int, 0}
            const uint64_t ptr = 0x00007f3a'12400000ull + (rng() % (1 << 20)) / 16 * 16;
            const auto n = static_cast<uint32_t>(rng() % 1000);
            std::memcpy(w.data() + b, &ptr, 8);
            std::memcpy(w.data() + b + 8, &n, 4);
        }
        random.pages.push_back(r);
        ints.pages.push_back(w);
        zero_heavy.pages.push_back(i % 5 == 0 ? w : Page{});
    }
    Mix text{"text", text_pages(), {}};
    Mix dirty{"text-resent", {}, text.pages};  // each page with 16 bytes changed
    for (const Page& p : text.pages) {
        Page q = p;
        for (int k = 0; k < 16; ++k) q[rng() % kPageSize] ^= 0x5a;
        dirty.pages.push_back(q);
    }
    mixes = {zero_heavy, text, dirty, ints, random};
    if (!binary.empty()) mixes.push_back({"binary", file_pages(binary, kMixPages), {}});
    if (!memory.empty()) mixes.push_back({"guest-memory", file_pages(memory, SIZE_MAX), {}});
    return mixes;
}

// Pre-sent pages cached, and no caching of what is encoded, so every
// iteration sees the same cache.
CodecContext context_for(const Mix& mix) {
    CodecContext ctx(CodecOptions{.cache_pages = mix.previous.size() + 1, .cache_sent_pages = false});
    for (size_t i = 0; i < mix.previous.size(); ++i) ctx.cache().insert(i, mix.previous[i]);
    return ctx;
}

void encode_bench(benchmark::State& state, Codec codec, const Mix* mix) {
    CodecContext ctx = context_for(*mix);
    std::vector<uint8_t> out;
    out.reserve(mix->pages.size() * kMaxRecordSize);
    size_t bytes = 0;
    for (auto _ : state) {
        out.clear();
        for (size_t i = 0; i < mix->pages.size(); ++i) encode_page(codec, i, mix->pages[i], ctx, out);
        bytes = out.size();
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(mix->pages.size() * kPageSize));
    state.counters["ratio"] = static_cast<double>(bytes) / static_cast<double>(mix->pages.size() * kPageSize);
    const auto& st = ctx.stats();
    std::string used;
    for (size_t c = 0; c < kWireCodecs; ++c) {
        if (st.pages[c] == 0) continue;
        const double share = 100.0 * static_cast<double>(st.pages[c]) / static_cast<double>(st.total_pages());
        used += std::string(used.empty() ? "" : " ") + std::string(codec_name(static_cast<Codec>(c))) + ":" +
                std::to_string(static_cast<int>(share + 0.5)) + "%";
    }
    state.SetLabel(used);
}

void decode_bench(benchmark::State& state, Codec codec, const Mix* mix) {
    CodecContext enc = context_for(*mix), dec = context_for(*mix);
    std::vector<uint8_t> stream;
    for (size_t i = 0; i < mix->pages.size(); ++i) encode_page(codec, i, mix->pages[i], enc, stream);
    Page out;
    for (auto _ : state) {
        std::span<const uint8_t> rest{stream};
        for (size_t i = 0; i < mix->pages.size(); ++i) {
            const size_t n = read_record_header(rest)->record_size();
            if (!decode_page(rest.first(n), i, out, dec).ok()) {
                state.SkipWithError("decode failed");
                return;
            }
            rest = rest.subspan(n);
        }
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(mix->pages.size() * kPageSize));
}

}  // namespace

int main(int argc, char** argv) {
    std::string memory, binary;
    std::vector<char*> rest{argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--memory" && i + 1 < argc) memory = argv[++i];
        else if (a == "--binary" && i + 1 < argc) binary = argv[++i];
        else rest.push_back(argv[i]);
    }
    const std::vector<Mix> mixes = make_mixes(memory, binary);
    constexpr Codec kCodecs[] = {Codec::None, Codec::Zero, Codec::Wkdm, Codec::Xbzrle,
                                 Codec::Zstd, Codec::Lz4,  Codec::Sparse, Codec::Auto};
    for (const Mix& mix : mixes) {
        if (mix.pages.empty()) continue;
        for (Codec c : kCodecs) {
            const std::string name = std::string(codec_name(c)) + "/" + mix.name;
            benchmark::RegisterBenchmark(("encode/" + name).c_str(), encode_bench, c, &mix)->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(("decode/" + name).c_str(), decode_bench, c, &mix)->Unit(benchmark::kMillisecond);
        }
    }
    int n = static_cast<int>(rest.size());
    benchmark::Initialize(&n, rest.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
