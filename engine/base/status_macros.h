// Early-return helpers for absl::Status and absl::StatusOr, used across engine/ and tools/.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HGRN2_STATUS_CONCAT_INNER(a, b) a##b
#define HGRN2_STATUS_CONCAT(a, b) HGRN2_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define HGRN2_RETURN_IF_ERROR(expr)                                   \
  do {                                                                \
    if (::absl::Status hgrn2_status_ = (expr); !hgrn2_status_.ok()) { \
      return hgrn2_status_;                                           \
    }                                                                 \
  } while (false)

// `lhs = value of expr` when OK; otherwise returns its status from the enclosing function.
// `lhs` may declare a variable: HGRN2_ASSIGN_OR_RETURN(auto file, WeightFile::Open(path));
#define HGRN2_ASSIGN_OR_RETURN(lhs, expr) \
  HGRN2_ASSIGN_OR_RETURN_IMPL(HGRN2_STATUS_CONCAT(hgrn2_statusor_, __LINE__), lhs, expr)

#define HGRN2_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (!statusor.ok()) {                                  \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = *std::move(statusor)
