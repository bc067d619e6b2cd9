import { asClass } from 'awilix';
import { definePlugin } from '../../kernel/plugin.js';
import { GroupsService } from './groups.service.js';

/** Provides `groupService`: groups and membership; publishes member.added / member.removed. */
export const groupsPlugin = definePlugin({
  name: 'groups',
  dependsOn: ['storage'],
  register({ container }) {
    container.register({ groupService: asClass(GroupsService).singleton() });
  },
});
