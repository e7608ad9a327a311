// Parsing and validation of fla's HGRN2 config.json, with fla's defaults and derived sizes.
#include "engine/checkpoint/model_config.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/base/file_io.h"
#include "engine/base/json_excerpt.h"
#include "engine/base/status_macros.h"

namespace hgrn2 {
namespace {

using Json = nlohmann::json;

// Sizes beyond this are refused, so that products of two sizes fit in int64; the one product of
// more (a sequence's state bytes) is checked against kMaxStateBytes.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();
constexpr double kMaxStateBytes = 0x1p40;  // 1 TiB per sequence: far beyond any real model
constexpr double kMaxParameters = 0x1p50;  // about 10^15, as far beyond; int64 holds 2^63

// fla's HGRN2Config defaults for the fields that may be null.
constexpr int64_t kDefaultExpandRatio = 128;
constexpr double kDefaultHiddenRatio = 4;

// A JSON value for an error message: its type, then the value shortened.
std::string Describe(const Json& value) {
  const std::string text = JsonExcerpt(value, 40);
  switch (value.type()) {
    case Json::value_t::string:
      return absl::StrCat("string ", text);
    case Json::value_t::boolean:
      return absl::StrCat("boolean ", text);
    case Json::value_t::number_float:
      return absl::StrCat("number ", text);
    case Json::value_t::array:
      return absl::StrCat("array ", text);
    case Json::value_t::object:
      return absl::StrCat("object ", text);
    default:
      return text;  // null and integers speak for themselves
  }
}

// Reads the fields of one config object; every error starts with the source and names the field.
class ConfigReader {
 public:
  ConfigReader(const Json& json, absl::string_view source) : json_(json), source_(source) {}

  absl::Status FieldError(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field \"", field, "\": ", what));
  }

  // The field's value, or nullptr when absent.
  const Json* Find(absl::string_view field) const {
    const auto it = json_.find(std::string(field));
    return it == json_.end() ? nullptr : &*it;
  }

  absl::Status WrongType(absl::string_view field, absl::string_view expected,
                         const Json& value) const {
    return FieldError(field, absl::StrCat("expected ", expected, ", got ", Describe(value)));
  }

  // An integer field; nullopt when null (and `nullable`) or absent (then `fallback` applies).
  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view field,
                                             std::optional<int64_t> fallback, bool nullable) const {
    const Json* value = Find(field);
    if (value == nullptr) return fallback;
    if (value->is_null() && nullable) return std::optional<int64_t>();
    if (!value->is_number_integer()) {
      return WrongType(field, nullable ? "an integer or null" : "an integer", *value);
    }
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(field, absl::StrCat("value ", value->dump(), " is too large"));
    }
    return std::optional<int64_t>(value->get<int64_t>());
  }

  // A positive size no larger than kMaxSize, or nullopt when null/absent without a fallback.
  absl::StatusOr<std::optional<int64_t>> Size(absl::string_view field,
                                              std::optional<int64_t> fallback,
                                              bool nullable) const {
    HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> size, Int(field, fallback, nullable));
    if (size.has_value() && *size <= 0) {
      return FieldError(field, absl::StrCat("must be positive, got ", *size));
    }
    if (size.has_value() && *size > kMaxSize) {
      return FieldError(field,
                        absl::StrCat("value ", *size, " is too large (limit ", kMaxSize, ")"));
    }
    return size;
  }

  absl::StatusOr<bool> Bool(absl::string_view field, bool fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) return WrongType(field, "a boolean", *value);
    return value->get<bool>();
  }

  // A number field (integer or float); nullopt when null and `nullable`.
  absl::StatusOr<std::optional<double>> Number(absl::string_view field, double fallback,
                                               bool nullable) const {
    const Json* value = Find(field);
    if (value == nullptr) return std::optional<double>(fallback);
    if (value->is_null() && nullable) return std::optional<double>();
    if (!value->is_number()) {
      return WrongType(field, nullable ? "a number or null" : "a number", *value);
    }
    return std::optional<double>(value->get<double>());
  }

  absl::StatusOr<std::string> String(absl::string_view field, absl::string_view fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) return std::string(fallback);
    if (!value->is_string()) return WrongType(field, "a string", *value);
    return value->get<std::string>();
  }

  // Fields of features this server does not implement: absent or null only.
  absl::Status MustBeNull(absl::string_view field, absl::string_view feature) const {
    const Json* value = Find(field);
    if (value == nullptr || value->is_null()) return absl::OkStatus();
    return FieldError(
        field, absl::StrCat("must be null (", feature, " not supported), got ", Describe(*value)));
  }

  absl::StatusOr<int32_t> TokenId(absl::string_view field, const Json& value) const {
    if (!value.is_number_integer()) return WrongType(field, "an integer token id", value);
    const bool in_range =
        value.is_number_unsigned()
            ? value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())
            : value.get<int64_t>() >= 0 &&
                  value.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!in_range) {
      return FieldError(field,
                        absl::StrCat("token id ", value.dump(), " is out of range [0, 2^31)"));
    }
    return static_cast<int32_t>(value.get<int64_t>());
  }

  // bos_token_id / pad_token_id: an id or null.
  absl::StatusOr<std::optional<int32_t>> OptionalTokenId(absl::string_view field,
                                                         std::optional<int32_t> fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) return fallback;
    if (value->is_null()) return std::optional<int32_t>();
    if (!value->is_number_integer()) return WrongType(field, "an integer or null", *value);
    HGRN2_ASSIGN_OR_RETURN(const int32_t id, TokenId(field, *value));
    return std::optional<int32_t>(id);
  }

  // eos_token_id: an id, a list of ids, or null.
  absl::StatusOr<std::vector<int32_t>> TokenIdList(absl::string_view field,
                                                   std::vector<int32_t> fallback) const {
    const Json* value = Find(field);
    if (value == nullptr) return fallback;
    if (value->is_null()) return std::vector<int32_t>();
    std::vector<int32_t> ids;
    if (value->is_array()) {
      for (const Json& element : *value) {
        if (!element.is_number_integer()) {
          return WrongType(field, "an integer, a list of integers or null", *value);
        }
        HGRN2_ASSIGN_OR_RETURN(const int32_t id, TokenId(field, element));
        ids.push_back(id);
      }
      return ids;
    }
    if (!value->is_number_integer()) {
      return WrongType(field, "an integer, a list of integers or null", *value);
    }
    HGRN2_ASSIGN_OR_RETURN(const int32_t id, TokenId(field, *value));
    ids.push_back(id);
    return ids;
  }

 private:
  const Json& json_;
  absl::string_view source_;
};

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::Parse(absl::string_view json_text,
                                               absl::string_view source) {
  Json json;
  try {  // with allow_exceptions false only allocation failures can throw; keep them inside
    json = Json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat(source, ": cannot parse: ", e.what()));
  }
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": must be a JSON object, got ", Describe(json)));
  }
  const ConfigReader reader(json, source);

  if (const Json* model_type = reader.Find("model_type"); model_type != nullptr) {
    if (!model_type->is_string()) return reader.WrongType("model_type", "a string", *model_type);
    if (model_type->get_ref<const std::string&>() != "hgrn2") {
      return reader.FieldError(
          "model_type",
          absl::StrCat("unsupported model type ",
                       model_type->dump(-1, ' ', false, Json::error_handler_t::replace),
                       " (supported: hgrn2)"));
    }
  }
  HGRN2_RETURN_IF_ERROR(reader.MustBeNull("attn", "hybrid softmax-attention layers"));
  HGRN2_RETURN_IF_ERROR(reader.MustBeNull("attnres_block_size", "attention residual blocks"));
  if (const Json* affine = reader.Find("elementwise_affine"); affine != nullptr) {
    if (!affine->is_boolean()) return reader.WrongType("elementwise_affine", "a boolean", *affine);
    if (!affine->get<bool>()) {
      return reader.FieldError("elementwise_affine",
                               "must be true: norms without weights are not supported");
    }
  }
  HGRN2_ASSIGN_OR_RETURN(const std::string hidden_act, reader.String("hidden_act", "swish"));
  if (hidden_act != "swish" && hidden_act != "silu") {
    return reader.FieldError("hidden_act", absl::StrCat("unsupported activation \"", hidden_act,
                                                        "\" (supported: swish, silu)"));
  }

  ModelConfig config;
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> vocab_size,
                         reader.Size("vocab_size", 32000, /*nullable=*/false));
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> hidden_size,
                         reader.Size("hidden_size", 2048, /*nullable=*/false));
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> num_layers,
                         reader.Size("num_hidden_layers", 24, /*nullable=*/false));
  config.vocab_size = *vocab_size;
  config.hidden_size = *hidden_size;
  config.num_layers = *num_layers;
  const int64_t d = config.hidden_size;

  // Heads and key width, as fla's HGRN2Attention resolves them.
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> num_heads,
                         reader.Size("num_heads", std::nullopt, /*nullable=*/true));
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> expand_ratio,
                         reader.Size("expand_ratio", kDefaultExpandRatio, /*nullable=*/true));
  if (!num_heads.has_value() && !expand_ratio.has_value()) {
    return reader.FieldError("num_heads",
                             "num_heads and expand_ratio are both null; one must be given");
  }
  if (num_heads.has_value() && expand_ratio.has_value()) {
    if (*num_heads * *expand_ratio != d) {
      const bool defaulted = reader.Find("expand_ratio") == nullptr;
      return reader.FieldError(
          "expand_ratio",
          absl::StrCat("num_heads ", *num_heads, " x expand_ratio ", *expand_ratio,
                       defaulted ? " (the default; the field is absent)" : "", " = ",
                       *num_heads * *expand_ratio, " differs from hidden_size ", d));
    }
    config.num_heads = *num_heads;
    config.key_dim = *expand_ratio;
  } else if (num_heads.has_value()) {
    if (d % *num_heads != 0) {
      return reader.FieldError(
          "num_heads",
          absl::StrCat("hidden_size ", d, " is not divisible by num_heads ", *num_heads));
    }
    config.num_heads = *num_heads;
    config.key_dim = d / *num_heads;
  } else {
    if (d % *expand_ratio != 0) {
      return reader.FieldError(
          "expand_ratio",
          absl::StrCat("hidden_size ", d, " is not divisible by expand_ratio ", *expand_ratio));
    }
    config.num_heads = d / *expand_ratio;
    config.key_dim = *expand_ratio;
  }
  if (d % config.num_heads != 0) {  // unreachable after the checks above; kept as the invariant
    return reader.FieldError(
        "num_heads",
        absl::StrCat("hidden_size ", d, " is not divisible by num_heads ", config.num_heads));
  }
  config.value_dim = d / config.num_heads;

  // MLP width: fla's GatedMLP rounds 2/3 of D·hidden_ratio up to a multiple of 256.
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> intermediate_size,
                         reader.Size("intermediate_size", std::nullopt, /*nullable=*/true));
  HGRN2_ASSIGN_OR_RETURN(const std::optional<double> hidden_ratio_field,
                         reader.Number("hidden_ratio", kDefaultHiddenRatio, /*nullable=*/true));
  const double hidden_ratio = hidden_ratio_field.value_or(kDefaultHiddenRatio);
  if (intermediate_size.has_value()) {
    config.intermediate_size = *intermediate_size;
  } else {
    if (!(hidden_ratio > 0) || !std::isfinite(hidden_ratio)) {
      return reader.FieldError("hidden_ratio",
                               absl::StrCat("must be positive, got ", hidden_ratio));
    }
    // Python: int(hidden_size * hidden_ratio * 2 / 3), evaluated left to right in doubles.
    const double product = static_cast<double>(d) * hidden_ratio * 2 / 3;
    if (product >= static_cast<double>(kMaxSize)) {
      return reader.FieldError(
          "hidden_ratio", absl::StrCat("derived intermediate size is too large (hidden_size ", d,
                                       " x hidden_ratio ", hidden_ratio, ")"));
    }
    const int64_t truncated = static_cast<int64_t>(product);
    config.intermediate_size = 256 * ((truncated + 255) / 256);
    if (config.intermediate_size <= 0) {
      return reader.FieldError(
          "hidden_ratio",
          absl::StrCat("derived intermediate size is 0 (hidden_ratio ", hidden_ratio, ")"));
    }
  }

  HGRN2_ASSIGN_OR_RETURN(config.use_short_conv, reader.Bool("use_short_conv", false));
  HGRN2_ASSIGN_OR_RETURN(const std::optional<int64_t> conv_size,
                         reader.Int("conv_size", 4, /*nullable=*/false));
  config.conv_size = *conv_size;
  if (config.use_short_conv && (config.conv_size < 1 || config.conv_size > kMaxSize)) {
    return reader.FieldError(
        "conv_size",
        absl::StrCat("must be at least 1 with use_short_conv, got ", config.conv_size));
  }
  HGRN2_ASSIGN_OR_RETURN(config.use_lower_bound, reader.Bool("use_lower_bound", true));
  HGRN2_ASSIGN_OR_RETURN(config.tie_word_embeddings, reader.Bool("tie_word_embeddings", false));

  HGRN2_ASSIGN_OR_RETURN(const std::optional<double> norm_eps,
                         reader.Number("norm_eps", 1e-6, /*nullable=*/false));
  // 0 would turn an all-zero row into NaN. The norms compute in float32, so the value must stay
  // finite and non-zero there too (1e39 would become inf, 1e-50 zero).
  if (!std::isfinite(*norm_eps) || *norm_eps <= 0) {
    return reader.FieldError("norm_eps",
                             absl::StrCat("must be a finite positive number, got ", *norm_eps));
  }
  if (*norm_eps > std::numeric_limits<float>::max() ||
      *norm_eps < std::numeric_limits<float>::min()) {
    return reader.FieldError(
        "norm_eps",
        absl::StrCat("must be a normal float32 number, in [", std::numeric_limits<float>::min(),
                     ", ", std::numeric_limits<float>::max(), "], got ", *norm_eps));
  }
  config.norm_eps = static_cast<float>(*norm_eps);

  const double state_bytes =
      4.0 * static_cast<double>(config.num_layers) *
      (static_cast<double>(config.num_heads) * static_cast<double>(config.value_dim) *
           static_cast<double>(config.key_dim) +
       3.0 * static_cast<double>(config.hidden_size) * static_cast<double>(config.conv_window()));
  if (state_bytes > kMaxStateBytes) {
    return reader.FieldError(
        "num_hidden_layers",
        absl::StrCat("one sequence's state would take ", state_bytes,
                     " bytes (limit 2^40): hidden_size, expand_ratio or num_hidden_layers is "
                     "implausibly large"));
  }

  // num_parameters() counts in int64; far below where it would overflow, no checkpoint could be
  // loaded anyway.
  const double d_real = static_cast<double>(d);
  const double layer_parameters = 3.0 * d_real + 4.0 * d_real * d_real +
                                  3.0 * d_real * static_cast<double>(config.intermediate_size) +
                                  3.0 * d_real * static_cast<double>(config.conv_window()) +
                                  (config.use_lower_bound ? d_real : 0.0);
  const double parameters =
      static_cast<double>(config.vocab_size) * d_real * (config.tie_word_embeddings ? 1.0 : 2.0) +
      static_cast<double>(config.num_layers) * layer_parameters + d_real;
  if (parameters > kMaxParameters) {
    return reader.FieldError(
        "hidden_size",
        absl::StrCat("the model would have ", parameters,
                     " parameters (limit 2^50): vocab_size, hidden_size, intermediate_size or "
                     "num_hidden_layers is implausibly large"));
  }

  HGRN2_ASSIGN_OR_RETURN(config.bos_token_id, reader.OptionalTokenId("bos_token_id", 1));
  HGRN2_ASSIGN_OR_RETURN(config.eos_token_ids, reader.TokenIdList("eos_token_id", {2}));
  HGRN2_ASSIGN_OR_RETURN(config.pad_token_id, reader.OptionalTokenId("pad_token_id", std::nullopt));
  return config;
}

absl::StatusOr<ModelConfig> ModelConfig::Load(const std::filesystem::path& path) {
  std::error_code error;
  const std::filesystem::path file =
      std::filesystem::is_directory(path, error) ? path / "config.json" : path;
  absl::StatusOr<std::string> text = ReadFileToString(file);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return text.status();
    return absl::InvalidArgumentError(text.status().message());
  }
  return Parse(*text, file.string());
}

}  // namespace hgrn2
