// Chat templates through minja against transformers' apply_chat_template, on real models'
// templates (tests/data/chat_templates/expected.json, made by make_expected.py there); where a
// template comes from; the built-in default.
#include "server/http/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(ChatTemplate, RendersAsTransformersDoes) {
  const std::filesystem::path dir = testing::TestDataDir() / "chat_templates";
  const nlohmann::json expected = nlohmann::json::parse(ReadFile(dir / "expected.json"));
  std::set<std::string> templates;
  int rendered = 0, refused = 0;
  for (const nlohmann::json& c : expected["cases"]) {
    const std::string name = c["template"];
    templates.insert(name);
    SCOPED_TRACE(name + ": " + c["messages"].dump());
    absl::StatusOr<std::unique_ptr<ChatTemplate>> chat =
        ChatTemplate::FromSource(ReadFile(dir / name), c["bos_token"], c["eos_token"], name);
    ASSERT_TRUE(chat.ok()) << chat.status();
    const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(c["messages"].dump());
    absl::StatusOr<std::string> text =
        (*chat)->Render(messages, c["add_generation_prompt"], nullptr);
    if (c.contains("error")) {
      ASSERT_FALSE(text.ok()) << *text;
      EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(text.status().message()),
                  HasSubstr("messages: the chat template says"));
      ++refused;
    } else {
      ASSERT_TRUE(text.ok()) << text.status();
      EXPECT_EQ(*text, c["expected"].get<std::string>());
      ++rendered;
    }
  }
  EXPECT_TRUE(templates.count("meta-llama-Llama-3.1-8B-Instruct.jinja"));
  EXPECT_TRUE(templates.count("Qwen-Qwen2.5-7B-Instruct.jinja"));
  EXPECT_TRUE(templates.count("mistralai-Mistral-Nemo-Instruct-2407.jinja"));
  EXPECT_GE(rendered, 20);
  EXPECT_GE(refused, 1);
}

TEST(ChatTemplate, ComesFromTheFlagThenTheConfigThenTheFolderThenTheDefault) {
  const std::filesystem::path dir = testing::MakeTempDir();
  // No tokenizer_config.json, no chat_template.jinja: the built-in default, BOS and EOS unknown.
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Load(dir, "", nullptr);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ((*chat)->source(), ChatTemplate::kDefaultSource);
  WriteFile(dir / "tokenizer_config.json",
            R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}})");
  chat = ChatTemplate::Load(dir, "", nullptr);
  ASSERT_TRUE(chat.ok()) << chat.status();
  const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}])");
  absl::StatusOr<std::string> text = (*chat)->Render(messages, true, nullptr);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>Be brief.\n\nUser: Hi\nAssistant: Hello.</s>\nUser: Bye\nAssistant:");
  text = (*chat)->Render(nlohmann::ordered_json::parse(R"([{"role": "tool", "content": "x"}])"),
                         true, nullptr);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("only system, user and assistant"));

  WriteFile(dir / "chat_template.jinja", "folder:{{ messages[0]['content'] }}");
  chat = ChatTemplate::Load(dir, "", nullptr);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->Render(messages, false, nullptr), "folder:Be brief.");
  WriteFile(dir / "tokenizer_config.json",
            R"({"chat_template": [{"name": "tool_use", "template": "no"},
                                  {"name": "default", "template": "config:{{ bos_token }}{{ x }}"}],
                "bos_token": "<s>"})");
  chat = ChatTemplate::Load(dir, "", nullptr);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->Render(messages, false, nlohmann::ordered_json{{"x", 7}}), "config:<s>7");
  WriteFile(dir / "flag.jinja", "flag");
  chat = ChatTemplate::Load(dir, (dir / "flag.jinja").string(), nullptr);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->Render(messages, false, nullptr), "flag");
  EXPECT_THAT((*chat)->origin(), HasSubstr("--chat-template"));

  // Errors name their source.
  absl::StatusOr<std::unique_ptr<ChatTemplate>> missing =
      ChatTemplate::Load(dir, (dir / "nope.jinja").string(), nullptr);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("--chat-template"));
  WriteFile(dir / "broken.jinja", "{% for x in %}");
  absl::StatusOr<std::unique_ptr<ChatTemplate>> broken =
      ChatTemplate::Load(dir, (dir / "broken.jinja").string(), nullptr);
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(broken.status().message()), HasSubstr("does not parse"));
}

}  // namespace
}  // namespace hgrn2::server
