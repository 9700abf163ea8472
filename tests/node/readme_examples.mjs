// The official Node SDK's own README usage, against the gateway at process.argv[2] (a /v1 URL).
// Prints one JSON line of what each call returned; any thrown error fails the process.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "unused", maxRetries: 0 });
const seen = {};

const completion = await client.chat.completions.create({
  model: "gpt-4o",
  messages: [
    { role: "developer", content: "Talk like a pirate." },
    { role: "user", content: "Are semicolons optional in JavaScript?" },
  ],
});
seen.chat = completion.choices[0].message.content;

let streamed = "";
const stream = await client.chat.completions.create({
  model: "gpt-4o",
  messages: [{ role: "user", content: "Say this is a test" }],
  stream: true,
});
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content || "";
}
seen.streamed = streamed;

const runner = client.chat.completions.stream({
  model: "gpt-4o",
  messages: [{ role: "user", content: "Say this is a test" }],
});
const final = await runner.finalChatCompletion();
seen.helperRole = final.choices[0].message.role;

const response = await client.responses.create({
  model: "gpt-4o",
  instructions: "You are a coding assistant that talks like a pirate",
  input: "Are semicolons optional in JavaScript?",
});
seen.responseText = response.output_text;
const next = await client.responses.create({ model: "gpt-4o", input: "And in Python?", previous_response_id: response.id });
seen.chainedText = next.output_text;

const responseStream = client.responses.stream({ model: "gpt-4o", input: "Say this is a test" });
const finalResponse = await responseStream.finalResponse();
seen.streamedResponse = finalResponse.output_text;

const conversation = await client.conversations.create({ metadata: { topic: "node" } });
await client.responses.create({ model: "gpt-4o", input: "Remember me.", conversation: conversation.id });
const items = [];
for await (const item of client.conversations.items.list(conversation.id, { order: "asc" })) items.push(item.type);
seen.conversationItems = items;

seen.models = (await client.models.list()).data.map((m) => m.id);
console.log(JSON.stringify(seen));
