// The Vercel AI SDK (`ai` with `@ai-sdk/openai`) against the gateway at process.argv[2] (a /v1 URL),
// as its docs show: the provider's default model (the Responses API, `store` left at its default),
// a tool with `execute` run in a loop (`stopWhen: isStepCount(5)`), and the history kept by pushing
// each call's `responseMessages` onto `messages`. From its second request on, the SDK sends the
// assistant's earlier text as `item_reference`s. Prints one JSON line of what each turn returned;
// any thrown error fails the process.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, isStepCount, tool } from 'ai';
import { z } from 'zod';

const openai = createOpenAI({ baseURL: process.argv[2], apiKey: 'unused' });
const model = openai('gpt-4o');

const tools = {
  weather: tool({
    description: 'Get the weather in a location',
    inputSchema: z.object({
      location: z.string().describe('The location to get the weather for'),
    }),
    execute: async ({ location }) => ({ location, temperature: 72 }),
  }),
};

const messages = [];
const seen = {};

// Turn 1: the model calls the tool, the SDK runs it and sends its result back (a second step).
messages.push({ role: 'user', content: 'What is the weather in San Francisco?' });
const first = await generateText({ model, tools, stopWhen: isStepCount(5), messages });
messages.push(...first.responseMessages);
seen.firstText = first.text;
seen.firstSteps = first.steps.length;
seen.toolResults = first.steps.flatMap((step) => step.toolResults.map((result) => result.output));

// Turn 2: a follow-up with a PDF; the history goes back as item references and the call whole.
messages.push({
  role: 'user',
  content: [
    { type: 'text', text: 'And what does this report say?' },
    { type: 'file', data: Buffer.from('%PDF-1.4\n%%EOF\n'), mediaType: 'application/pdf', filename: 'report.pdf' },
  ],
});
const second = await generateText({ model, tools, stopWhen: isStepCount(5), messages });
messages.push(...second.responseMessages);
seen.secondText = second.text;
seen.roles = messages.map((message) => message.role);

console.log(JSON.stringify(seen));
